"""The Incus backend against a real daemon, in the session's throwaway project."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from plex.backends.incus.client import PylxdIncus
from plex.backends.mmdebstrap import metadata_tarball
from plex.model import owner

if TYPE_CHECKING:
    from plex.model.plex import IncusConfig

pytestmark = pytest.mark.incus


def tiny_rootfs(path: Path) -> Path:
    """A rootfs with a few directories: enough to create (not boot) instances quickly."""
    with tarfile.open(path, "w") as tar:
        for d in ("etc", "root", "tmp", "sbin"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        data = b"tiny\n"
        info = tarfile.TarInfo("etc/hostname")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def tiny_image(incus: PylxdIncus, tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("tiny")
    meta = metadata_tarball(d / "meta.tar", "plex test tiny image", {})
    fp = incus.import_image(meta, tiny_rootfs(d / "rootfs.tar"), {"plex.test": "tiny"})
    incus.set_alias("plex-test/tiny", fp)
    return fp


def test_create_observe_delete_ignores_foreign(
    incus: PylxdIncus, tiny_image: str, incus_cfg: IncusConfig
) -> None:
    root = {"root": {"type": "disk", "path": "/", "pool": incus_cfg.pool}}
    incus.create_instance(
        "owned1",
        image="plex-test/tiny",
        devices=root,
        profiles=[],
        config={owner.PLEX: "tplex", owner.ROLE: "agent"},
    )
    incus.create_instance("foreign1", image=tiny_image, devices=root, profiles=[], config={})
    incus.create_instance(
        "otherplex1",
        image=tiny_image,
        devices=root,
        profiles=[],
        config={owner.PLEX: "someone-else"},
    )

    seen = incus.observe("tplex")
    assert set(seen.instances) == {"owned1"}
    inst = seen.instances["owned1"]
    assert inst.role == "agent" and inst.status == "Stopped" and len(inst.uuid) == 36
    assert seen.aliases["plex-test/tiny"] == tiny_image
    assert set(incus.instance_names()) >= {"owned1", "foreign1", "otherplex1"}

    incus.delete_instance("owned1")
    assert incus.observe("tplex").instances == {}
    # What plex does not own is still there.
    assert {"foreign1", "otherplex1"} <= set(incus.instance_names())
    incus.delete_instance("foreign1")
    incus.delete_instance("otherplex1")


def test_push_file_applies_mode_and_owner(
    incus: PylxdIncus, tiny_image: str, incus_cfg: IncusConfig
) -> None:
    root = {"root": {"type": "disk", "path": "/", "pool": incus_cfg.pool}}
    incus.create_instance(
        "files1", image=tiny_image, devices=root, profiles=[], config={owner.PLEX: "tplex"}
    )
    try:
        incus.push_file("files1", "/root/secret", b"key material\n", mode=0o600)
        assert incus.pull_file("files1", "/root/secret") == b"key material\n"
        # Incus reports the mode in X-Incus-mode on a pull: the 0600 must have been applied
        # (pylxd's own X-LXD-mode header would have been ignored).
        resp = incus.request("GET", "instances/files1/files", params={"path": "/root/secret"})
        assert resp is not None
        assert resp.headers.get("X-Incus-mode") == "0600"
    finally:
        incus.delete_instance("files1")


def test_unreachable_socket_is_a_clear_error(tmp_path: Path) -> None:
    from plex.backends.incus.client import PylxdIncus
    from plex.errors import BackendError
    from plex.model.plex import IncusConfig

    sock = tmp_path / "nope.socket"
    sock.touch()
    with pytest.raises(BackendError, match="cannot reach Incus"):
        PylxdIncus(IncusConfig(project="x", socket=str(sock)))
