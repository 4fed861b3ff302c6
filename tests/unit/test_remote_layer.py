"""Package layers of remote (non-Debian) bases, built in a transient instance.

This machine cannot reach an image server, so the Incus side is a recording fake of the
backend Protocol; the real Incus path of the plex layer is covered by tests/integration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.backends.incus.protocol import ExecResult, ImageInfo
from plex.errors import BackendError
from plex.model.plex import Role
from plex.plexfile.load import parse_plex
from plex.services.bake import Baker, Paths

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeIncus:
    fail_on: str | None = None  # a command substring that exits 1
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    live: set[str] = field(default_factory=set)

    def observe_builds(self, plex: str) -> list[Any]:
        return []

    def image_by_alias(self, alias: str) -> ImageInfo | None:
        fp = self.aliases.get(alias)
        return ImageInfo(fp, (alias,), {}, 1, "") if fp else None

    def images(self) -> list[ImageInfo]:
        return [ImageInfo(fp, (), {}, 123, "") for fp in self.published]

    def create_instance(self, name: str, **kw: Any) -> None:
        self.calls.append(("create", name, kw.get("source"), kw["image"]))
        self.live.add(name)

    def start(self, name: str) -> None:
        self.calls.append(("start", name))

    def stop(self, name: str, force: bool = True) -> None:
        self.calls.append(("stop", name))

    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult:
        cmd = " ".join(argv)
        self.calls.append(("exec", name, cmd))
        if self.fail_on and self.fail_on in cmd:
            return ExecResult(1, "", "Problem: nothing provides haproxy\n")
        return ExecResult(0, "", "")

    def push_file(
        self, name: str, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        self.calls.append(("push", name, path))

    def publish(
        self,
        name: str,
        *,
        aliases: list[str],
        properties: dict[str, str],
        compression: str = "zstd",
    ) -> str:
        fp = f"{len(self.published):064x}"
        self.published.append(fp)
        self.calls.append(("publish", name, properties.get("plex.layer")))
        return fp

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        self.aliases[alias] = fingerprint

    def delete_image(self, fingerprint: str) -> None:
        self.published.remove(fingerprint)

    def delete_instance(self, name: str) -> None:
        self.calls.append(("delete", name))
        self.live.discard(name)


@pytest.fixture
def suse_lb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["roles"]["lb"]["os"] = {"base": "opensuse-tumbleweed", "virt": "container"}
    return parse_plex(yaml.safe_dump(data), "suse-lb.yaml")


def test_remote_base_package_layer_is_built_in_a_transient_instance(suse_lb) -> None:  # type: ignore[no-untyped-def]
    incus = FakeIncus()
    [result] = Baker(suse_lb, incus, Paths.under(ROOT)).bake([Role.LB])  # type: ignore[arg-type]
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
    assert incus.live == set()  # both transient instances removed


def test_failed_package_install_publishes_nothing_and_cleans_up(suse_lb) -> None:  # type: ignore[no-untyped-def]
    incus = FakeIncus(fail_on="zypper")
    with pytest.raises(
        BackendError,
        match=r"package install failed in plex-build-demo-pkg-\w+ "
        r"\(exit 1\): Problem: nothing provides haproxy",
    ):
        Baker(suse_lb, incus, Paths.under(ROOT)).bake([Role.LB])  # type: ignore[arg-type]
    assert incus.published == [] and incus.aliases == {} and incus.live == set()
