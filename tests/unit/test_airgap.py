"""kubernetes.airgap: RKE2's airgap image tarball, checksum-verified from the release's
sha256sum-amd64.txt, baked into kube images; a local directory can stand in for the release
page (an air-gapped host's copy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plex.bake.recipe import load_role_recipe
from plex.errors import DownloadError
from plex.model.plex import KubernetesConfig, Plex, Role
from plex.plexfile.load import parse_plex
from plex.store import artifacts, releases
from tests.fixtures.build_standin import STANDIN_VERSION, build_standin_rke2

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = "/var/lib/rancher/rke2/agent/images/"


@pytest.fixture(scope="module")
def local_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    build_standin_rke2(root)
    return root


def _plex(release: Path, airgap: bool) -> Plex:
    data = yaml.safe_load((REPO / "plexes" / "demo.yaml").read_text())
    data["kubernetes"].update({"release_url": str(release), "airgap": airgap})
    return parse_plex(yaml.safe_dump(data), "demo.yaml")


def test_a_local_directory_replaces_the_release_url(local_release: Path, tmp_path: Path) -> None:
    kube = KubernetesConfig(version=STANDIN_VERSION, release_url=str(local_release))
    rel = releases.rke2_release(kube)
    images = rel.asset(releases.RKE2_IMAGES)
    assert images.url.startswith("file://")
    got = images.fetch(tmp_path / "cache")
    assert (
        got.path.read_bytes()
        == (local_release / STANDIN_VERSION / releases.RKE2_IMAGES).read_bytes()
    )


def test_a_tampered_local_tarball_is_refused(local_release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / STANDIN_VERSION
    copy.mkdir(parents=True)
    for f in (local_release / STANDIN_VERSION).iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / releases.RKE2_IMAGES).write_bytes(b"not the release's tarball")
    kube = KubernetesConfig(version=STANDIN_VERSION, release_url=str(copy.parent))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        releases.rke2_release(kube).asset(releases.RKE2_IMAGES).fetch(tmp_path / "cache")


@pytest.mark.parametrize("role", [Role.SERVER, Role.AGENT])
def test_airgap_adds_the_image_tarball_to_kube_recipes_only_when_on(
    local_release: Path, role: Role, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    rr = load_role_recipe(REPO / "bake", role)
    on, off = _plex(local_release, True), _plex(local_release, False)
    assert [a.name for a in rr.artifacts if a.wanted(on)] == ["rke2", "rke2-images"]
    assert [a.name for a in rr.artifacts if a.wanted(off)] == ["rke2"]
    (spec,) = [a for a in rr.artifacts if a.name == "rke2-images"]
    assert any(IMAGES_DIR + releases.RKE2_IMAGES in cmd for cmd in spec.install)
    resolved = artifacts.resolve(on, "rke2-images")
    sums = (local_release / STANDIN_VERSION / releases.RKE2_CHECKSUMS).read_text()
    assert f"{resolved.sha256}  {releases.RKE2_IMAGES}" in sums


def test_no_airgap_artifact_for_the_other_roles(local_release: Path) -> None:
    on = _plex(local_release, True)
    for role in (Role.LB, Role.REGISTRY):
        rr = load_role_recipe(REPO / "bake", role, on.registry.engine)
        assert "rke2-images" not in [a.name for a in rr.artifacts]
