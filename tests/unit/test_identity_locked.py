"""A locked (age-encrypted, no key) identity blocks only what needs a secret: public-only
commands (show, validate, inventory, identity show, plan) and the bake's rendering (images hold
public identity data only) work; anything asking for a secret says so in one line, exit 6."""

from __future__ import annotations

from pathlib import Path

import pytest

from plex.__main__ import main
from plex.deploy.cloudinit import user_data
from plex.errors import LockedError
from plex.model import topology
from plex.model.identity import known_hosts_file
from plex.plexfile.load import load_plex
from plex.store import vault
from plex.store.identity import load_identity, require_identity
from tests.unit.test_capacity import digests
from tests.unit.test_identity_vault import env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def locked(env: Path) -> Path:
    assert main(["identity", "demo"]) == 0
    assert main(["identity", "demo", "--encrypt"]) == 0
    key = env / "config" / "plex" / "age.key"
    key.rename(env / "away.key")  # locked: no key anywhere
    return env / "away.key"


__all__ = ["env"]  # the fixture, imported from test_identity_vault


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "demo"],
        ["show", "demo", "-o", "json"],
        ["validate", str(REPO / "plexes" / "demo.yaml")],
        ["inventory", "demo"],
        ["identity", "show", "demo"],
    ],
)
def test_public_only_commands_work_locked(
    locked: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(argv) == 0
    assert "locked" not in capsys.readouterr().err


def test_plan_is_not_refused_for_the_lock(locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    main(["plan", "demo"])  # no Incus or images in a unit test: it fails, but not locked
    assert "locked" not in capsys.readouterr().err


def test_bake_renders_from_the_public_half(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plex = load_plex(REPO / "plexes" / "demo.yaml")
    public = require_identity(plex, secrets=False)
    assert public.locked and public.token == "" and public.node_passwords == {}
    # The same public data as the unlocked identity: the same images.
    monkeypatch.setenv(vault.KEY_FILE_ENV, str(locked))
    full = load_identity("demo")
    assert full is not None and not full.locked
    assert known_hosts_file(plex, public) == known_hosts_file(plex, full)
    # Every role's recipe renders from the public half, to the very digests of the full one.
    assert digests(plex, public) == digests(plex, full)
    assert public.deploy_key is not None and full.deploy_key is not None
    assert public.deploy_key.public == full.deploy_key.public


def test_what_needs_a_secret_says_locked_in_one_line(
    locked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plex = load_plex(REPO / "plexes" / "demo.yaml")
    with pytest.raises(LockedError, match="encrypted \\(age\\) and locked"):
        require_identity(plex)  # deploy, reset, smoke
    public = require_identity(plex, secrets=False)
    node = topology.resolve(plex, "demo-server1")
    for needs_secret in (
        lambda: public.private_files(node.name, node.role),
        lambda: public.node_password(node.name),
        lambda: user_data(plex, public, node),
        lambda: list(public.secret_needles([(node.name, node.role)])),
    ):
        with pytest.raises(LockedError) as e:
            needs_secret()
        assert "\n" not in e.value.message and "this needs its secrets" in e.value.message
    capsys.readouterr()
    assert main(["identity", "demo"]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "locked" in err[0]
