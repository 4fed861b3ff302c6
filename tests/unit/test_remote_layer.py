"""Package layers of remote (non-Debian) bases, built in a transient instance.

This machine cannot reach an image server, so the Incus side is a recording fake of the
backend Protocol; the real Incus path of the plex layer is covered by tests/integration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plex.backends.incus.protocol import ExecResult
from plex.errors import BackendError
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex
from plex.services.bake import Baker, Paths
from tests.fixtures.fake_incus import FakeIncus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def suse_lb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plex:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["roles"]["lb"]["os"] = {"base": "opensuse-tumbleweed", "virt": "container"}
    return parse_plex(yaml.safe_dump(data), "suse-lb.yaml")


def test_remote_base_package_layer_is_built_in_a_transient_instance(suse_lb: Plex) -> None:
    incus = FakeIncus()
    [result] = Baker(suse_lb, incus, Paths.under(ROOT)).bake([Role.LB])
    assert not result.cached and not result.package_cached
    build = incus.calls[0]
    assert build[0] == "create" and build[1].startswith("plex-build-demo-pkg-")
    assert build[2] == {
        "type": "image",
        "mode": "pull",
        "server": "https://images.linuxcontainers.org",
        "protocol": "simplestreams",
        "alias": "opensuse/tumbleweed/cloud",
    }
    install = next(c[2] for c in incus.calls if c[0] == "exec" and "zypper" in c[2])
    for pkg in ("haproxy", "keepalived", "openssh-server", "python3"):
        assert pkg in install
    layers = [c[2] for c in incus.calls if c[0] == "publish"]
    assert layers == ["package", "role"]  # the package layer, then the plex layer on top
    assert any(a.startswith("plex-pkg/") for a in incus.aliases)
    assert incus.aliases["demo/lb"] == result.fingerprint
    assert incus.instances == {}  # both transient instances removed


def test_a_second_bake_of_the_same_recipe_reuses_the_image(suse_lb: Plex) -> None:
    incus = FakeIncus()
    baker = Baker(suse_lb, incus, Paths.under(ROOT))
    [first] = baker.bake([Role.LB])
    incus.set_alias("demo/lb", "0" * 64)  # the moving alias went elsewhere (a rollback)
    builds = len(incus.calls)
    [again] = baker.bake([Role.LB])
    assert again.cached and again.package_cached
    assert (again.digest, again.fingerprint) == (first.digest, first.fingerprint)
    assert not [c for c in incus.calls[builds:] if c[0] in ("create", "publish")]
    assert incus.aliases["demo/lb"] == first.fingerprint  # moved back to the cached image


def test_failed_package_install_publishes_nothing_and_cleans_up(suse_lb: Plex) -> None:
    incus = FakeIncus(
        on_exec=lambda name, argv: (
            ExecResult(1, "", "Problem: nothing provides haproxy\n")
            if "zypper" in " ".join(argv)
            else None
        )
    )
    with pytest.raises(
        BackendError,
        match=r"package install failed in plex-build-demo-pkg-\w+ "
        r"\(exit 1\): Problem: nothing provides haproxy",
    ):
        Baker(suse_lb, incus, Paths.under(ROOT)).bake([Role.LB])
    assert incus.imgs == {} and incus.aliases == {} and incus.instances == {}
