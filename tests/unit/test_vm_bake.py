"""VmBaker's cache, catalog and alias semantics, with a recording fake of the Packer Protocol and
the in-memory Incus (a real MicroOS build needs KVM and internet; tests/integration/test_packer.py
runs the real Packer on what it can)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from plex.backends.packer import Artifact
from plex.bake.bases import Qcow2Base, Rke2Install
from plex.bake.packer_template import VmSpec, vm_digest, vm_inputs
from plex.bake.vm_files import vm_files
from plex.errors import DownloadError
from plex.model.plex import Plex, Role
from plex.services.bake import Paths
from plex.services.bake_vm import VmBaker, VmRecipe, fetch_base, verify_vm_artifact
from plex.store.catalog import load_catalog
from plex.store.downloads import Downloaded, fetch
from tests.fixtures.fake_incus import FakeIncus
from tests.fixtures.microos_appliances import UNVERSIONED, VERSIONED, appliances_dir
from tests.fixtures.release_server import serve_directory
from tests.unit.test_packer_template import REPO, load, vm_recipe

if TYPE_CHECKING:
    from tests.unit.conftest import Cli


class RecordingPacker:
    def __init__(self) -> None:
        self.templates: list[dict[str, Any]] = []

    def version(self) -> str:
        return "1.6.6"

    def validate(self, template: Path) -> None:
        self.templates.append(json.loads(template.read_text()))

    def build(
        self, template: Path, *, output_dir: Path | None = None, progress: object = None
    ) -> list[Artifact]:
        builder = json.loads(template.read_text())["builders"][0]
        out = Path(builder["output_directory"])
        assert out == output_dir
        out.mkdir()
        disk = out / builder["vm_name"]
        # No two real builds write the same disk (logs, machine-id, timestamps inside).
        build = len(self.templates)
        disk.write_bytes(b"QFI\xfb fake qcow2 of " + f"{builder['name']}, build {build}".encode())
        return [Artifact(0, "transcend.qemu", "VM", "", (str(disk),))]


def build_recipe(plex: Plex, role: Role) -> VmRecipe:
    """The VmRecipe as plan_vm builds it (vm_files runs the transaction-path check), from the
    pinned stand-in artifacts: nothing is resolved or fetched."""
    recipe = vm_recipe(plex, role)
    return VmRecipe(
        recipe,
        Qcow2Base.from_base(recipe.package.base),
        vm_files(plex, recipe),
        VmSpec.for_role(plex, role),
        vm_inputs(plex, recipe),
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("PLEX_CACHE_DIR", str(d))
    return d


def test_a_vm_recipe_is_identified_by_its_vm_inputs() -> None:
    plex = load("verniplex")
    vr = build_recipe(plex, Role.LB)
    assert vr.digest == vm_digest(plex, vr.recipe) != vr.recipe.digest
    assert vr.short == vr.digest[:12] and vr.recipe.short == vr.recipe.layer.digest[:12]


def test_build_then_cached_then_rebuilt_when_the_image_is_gone(tmp_path: Path, cache: Path) -> None:
    plex = load("verniplex")
    vr = build_recipe(plex, Role.LB)
    base_file = tmp_path / "microos.qcow2"
    base_file.write_bytes(b"base")
    base_sha = hashlib.sha256(b"base").hexdigest()
    fetched: list[str] = []

    def fetch(base: Qcow2Base) -> Downloaded:
        fetched.append(base.url)
        return Downloaded(base_file, base_sha, base.url)

    packer, incus = RecordingPacker(), FakeIncus("test")
    baker = VmBaker(plex, incus, packer, Paths.under(REPO), fetch=fetch)

    first = baker.bake_role(vr)
    assert not first.cached and first.digest == vr.digest
    (template,) = packer.templates
    builder = template["builders"][0]
    assert builder["iso_checksum"] == f"sha256:{base_sha}"
    assert builder["iso_url"] == str(base_file)  # the verified local copy, not the URL
    assert [c[0] for c in incus.calls].count("import") == 1
    (fp,) = incus.imgs
    props = incus.imgs[fp].properties
    assert incus.image_types[fp] == "virtual-machine"
    assert props["plex.digest"] == vr.digest and props["plex.virt"] == "vm"
    assert incus.aliases == {f"verniplex/lb@{vr.short}": fp, "verniplex/lb": fp}
    entry = load_catalog("verniplex").find(Role.LB, vr.digest)
    assert entry is not None and entry.virt == "vm" and entry.fingerprint == fp
    assert entry.inputs["base"]["sha256"] == base_sha
    manifest = verify_vm_artifact(cache / "images" / "verniplex" / f"lb-{vr.short}")
    assert set(manifest["files"]) == {"verniplex-lb.qcow2", "verniplex-lb.qcow2.zst"}
    assert not list((cache / "vm-build").iterdir())  # key, seed and work dir are gone

    again = baker.bake_role(vr)
    assert again.cached and again.fingerprint == fp
    assert len(packer.templates) == 1 and len(fetched) == 1

    incus.delete_alias(f"verniplex/lb@{vr.short}")  # someone deleted the pinned alias
    rebuilt = baker.bake_role(vr)
    assert not rebuilt.cached and len(packer.templates) == 2


def test_cli_refuses_a_container_base_as_vm(cli: Cli, plex_home: Path, state_dir: Path) -> None:
    res = cli("bake", "omniplex", "--type", "lb", "--virt", "vm")
    assert res.code == 2
    assert res.err_lines[0].endswith(
        "roles.lb.os.base: 'debian-bookworm' (mmdebstrap) cannot be baked as a VM"
    )


# --- the MicroOS base: an OBS-style .sha256 naming the versioned snapshot ----------------------


def _base(srv_url: str) -> Qcow2Base:
    url = f"{srv_url}/tumbleweed/appliances/{UNVERSIONED}"
    return Qcow2Base("opensuse-microos", url, f"{url}.sha256", Rke2Install.TAR)


@pytest.mark.parametrize("signed", [False, True])
def test_base_digest_is_the_redirect_targets_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signed: bool
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    data = appliances_dir(tmp_path / "site", signed=signed, extra_entries=1)
    with serve_directory(tmp_path / "site") as srv:
        srv.redirects[f"/tumbleweed/appliances/{UNVERSIONED}"] = (
            f"{srv.url}/tumbleweed/appliances/{VERSIONED}"
        )
        base = _base(srv.url)
        # The old lookup by the unversioned name finds nothing: the file names the snapshot.
        with pytest.raises(DownloadError, match=f"lists no sha256 for {UNVERSIONED}"):
            fetch(base.url, checksum_url=base.checksum_url, checksum_name=base.filename)
        got = fetch_base(base)
    assert got.path.read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.note == f"listed as {VERSIONED}, the redirect target"


def test_base_digest_from_the_single_entry_without_a_redirect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    data = appliances_dir(site)
    d = site / "tumbleweed" / "appliances"
    (d / UNVERSIONED).write_bytes(data)  # a mirror serving the link's content directly
    with serve_directory(site) as srv:
        got = fetch_base(_base(srv.url))
    assert got.note == f"the single entry of {UNVERSIONED}.sha256, {VERSIONED}"


def test_base_checksum_with_several_unmatched_entries_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    data = appliances_dir(site, extra_entries=1)
    (site / "tumbleweed" / "appliances" / UNVERSIONED).write_bytes(data)
    with (
        serve_directory(site) as srv,
        pytest.raises(DownloadError, match=r"has no entry for .*Cloud.qcow2 and 2 entries"),
    ):
        fetch_base(_base(srv.url))


def test_base_with_a_wrong_digest_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    appliances_dir(site)
    d = site / "tumbleweed" / "appliances"
    (d / VERSIONED).write_bytes(b"tampered")
    with serve_directory(site) as srv:
        srv.redirects[f"/tumbleweed/appliances/{UNVERSIONED}"] = (
            f"{srv.url}/tumbleweed/appliances/{VERSIONED}"
        )
        with pytest.raises(DownloadError, match="checksum mismatch"):
            fetch_base(_base(srv.url))
