"""tls.ca_files on a MicroOS bake: the CAs go where openSUSE's update-ca-certificates reads
them (/etc/pki/trust/anchors, in the snapshot) and the store is rebuilt inside the files
transaction, so the transaction-path check accepts the bake. Golden: the files step and the
anchored CA, from a fixed test CA (tests/unit/golden/trust/test-ca.pem, public only)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.bake.packer_template import (
    PLACEHOLDER_CHECKSUM,
    BuildPaths,
    VmSpec,
    packer_template,
)
from plex.bake.vm_files import SUSE_ANCHORS, check_transaction_paths, files_tarball, vm_files
from plex.errors import ConfigError
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex
from plex.plexfile.trust import TRUST_DIR
from plex.services.bake import Paths
from plex.services.bake_vm import VmBaker
from plex.store.downloads import Downloaded
from tests.fixtures.fake_incus import FakeIncus
from tests.unit.test_packer_template import REPO, vm_recipe
from tests.unit.test_vm_bake import RecordingPacker, build_recipe

GOLDEN = Path(__file__).parent / "golden" / "trust"
CA = GOLDEN / "test-ca.pem"


def ca_plex(tmp_path: Path) -> Plex:
    data = yaml.safe_load((REPO / "plexes" / "verniplex.yaml").read_text())
    data["tls"] = {"ca_files": [str(CA)]}
    path = tmp_path / "verniplex.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_plex(path)


def files_step(template: dict[str, Any]) -> str:
    steps = template["provisioners"]
    step = next(s for s in steps if s["type"] == "shell" and "plex files" in s["inline"][0])
    return str(step["inline"][1])


def test_the_debian_trust_dir_is_what_the_transaction_check_refuses(tmp_path: Path) -> None:
    plex = ca_plex(tmp_path)
    recipe = vm_recipe(plex, Role.AGENT)
    assert any(f.path.startswith(f"{TRUST_DIR}/") for f in recipe.layer.files)
    with pytest.raises(ConfigError, match="hidden after reboot on MicroOS"):
        check_transaction_paths(recipe.layer.files, "verniplex.yaml")


def test_ca_files_land_in_opensuses_anchors_and_the_store_is_rebuilt_in_the_transaction(
    tmp_path: Path,
) -> None:
    plex = ca_plex(tmp_path)
    recipe = vm_recipe(plex, Role.AGENT)
    files = vm_files(plex, recipe)  # accepted by the transaction-path check
    anchored = [f for f in files if f.path.startswith(f"{SUSE_ANCHORS}/")]
    assert [f.path for f in anchored] == [f"{SUSE_ANCHORS}/plex-00-test-ca.crt"]
    assert anchored[0].content.decode() == CA.read_text()
    assert not any(f.path.startswith("/usr/local/") for f in files)
    template = packer_template(
        plex,
        recipe,
        BuildPaths.placeholder(recipe),
        PLACEHOLDER_CHECKSUM,
        VmSpec.for_role(plex, Role.AGENT),
    )
    step = files_step(template)
    assert step.startswith("transactional-update --non-interactive --continue run /bin/sh -ec")
    assert "\nupdate-ca-certificates\n" in step
    text = f"--- {anchored[0].path}\n{anchored[0].content.decode()}--- files step\n{step}\n"
    golden = GOLDEN / "verniplex-agent-ca.txt"
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_a_microos_bake_with_ca_files_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    plex = ca_plex(tmp_path)
    paths = Paths.under(REPO)
    # The lb role: no release artifacts, so nothing is resolved or fetched.
    vr = build_recipe(plex, Role.LB)
    base_file = tmp_path / "microos.qcow2"
    base_file.write_bytes(b"base")
    sha = hashlib.sha256(b"base").hexdigest()
    packer, incus = RecordingPacker(), FakeIncus("test")
    baker = VmBaker(
        plex,
        incus,
        packer,
        paths,
        fetch=lambda base: Downloaded(base_file, sha, base.url),
    )
    result = baker.bake_role(vr)
    assert not result.cached and list(incus.image_types.values()) == ["virtual-machine"]
    (template,) = packer.templates
    assert "\nupdate-ca-certificates\n" in files_step(template)
    # The files tarball the build uploads holds the CA at its openSUSE path.
    with tarfile.open(fileobj=io.BytesIO(files_tarball(vr.files))) as tar:
        assert f"{SUSE_ANCHORS.lstrip('/')}/plex-00-test-ca.crt" in tar.getnames()
