"""The build VM's cloud-init NoCloud seed (golden files under tests/unit/golden/packer/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from plex.bake.seed import build_seed

GOLDEN = Path(__file__).parent / "golden" / "packer"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake plex-build"


@pytest.mark.parametrize("name", ["user-data", "meta-data"])
def test_golden_seed(name: str) -> None:
    text = build_seed("omniplex", "server", KEY).files()[name]
    path = GOLDEN / f"seed-{name}"
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with PLEX_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path} differs: PLEX_UPDATE_GOLDEN=1 to accept"


def test_seed_trusts_only_the_key_for_root() -> None:
    seed = build_seed("verniplex", "lb", KEY)
    assert seed.user_data.startswith("#cloud-config\n")
    data = yaml.safe_load(seed.user_data)
    assert data["users"] == [{"name": "root", "lock_passwd": True, "ssh_authorized_keys": [KEY]}]
    assert data["disable_root"] is False and data["ssh_pwauth"] is False
    assert yaml.safe_load(seed.meta_data) == {
        "instance-id": "plex-build-verniplex-lb",
        "local-hostname": "plex-build-verniplex-lb",
    }


@pytest.mark.parametrize(
    "bad", ["", "not a key", KEY + "\nruncmd: [reboot]", "ssh-ed25519 AAAA\nssh-rsa BBBB"]
)
def test_seed_refuses_anything_but_one_public_key(bad: str) -> None:
    with pytest.raises(ValueError, match="public key"):
        build_seed("demo", "server", bad)
