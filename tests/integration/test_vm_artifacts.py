"""VM image artifacts against real Incus: a qcow2 VM image exported into a zstd artifact and
imported back as a virtual-machine image, streamed end to end (peak memory measured).

Incus here cannot create VMs (no vhost_vsock), but its image store takes VM images: the qcow2
is a real one made by `qemu-img` (Debian's qemu-utils), imported the way a VM bake publishes it
(metadata tarball + `rootfs.img` multipart), exported by `plex image export` and imported back
by `plex image import` from the unified `metadata.yaml` + `rootfs.img` artifact.

The export and import run in a child process over a qcow2 of DISK_MIB of incompressible data,
and the child's peak RSS (getrusage) must stay far below the disk's size: nothing holds the
disk in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import zstandard

from plex.model.image import digest_alias
from plex.services import images as art
from plex.services.bake_vm import import_vm_image
from plex.store.catalog import Entry, load_catalog, save_catalog

from .conftest import NETWORK, POOL

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus

pytestmark = pytest.mark.incus

PLEX = "vmartplex"
ROLE = "server"
DIGEST = hashlib.sha256(b"vmartplex vm generation").hexdigest()
PKG = hashlib.sha256(b"vmartplex vm packages").hexdigest()
DISK_MIB = 384
# The child's own baseline (python, plex, a client) is measured in the same run; the streaming
# work may add buffers (zstd's per-thread jobs, 1 MiB reads), never the disk.
MAX_EXTRA_MIB = 96

CHILD = """
import json, resource, sys
from pathlib import Path
from plex.backends.incus.client import connect
from plex.model.plex import IncusConfig
from plex.services import images as art

project, pool, network, plex, role, dest, mode = sys.argv[1:8]
incus = connect(IncusConfig(project=project, pool=pool, network=network))
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {"baseline_kib": baseline}
if mode == "export":
    m = art.export_image(incus, plex, role, Path(dest))
    out["artifact"] = str(Path(dest) / m.filename)
else:
    m = art.import_image(incus, Path(dest))
out["manifest"] = m.to_json()
out["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def run_child(project: str, mode: str, dest: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, project, POOL, NETWORK, PLEX, ROLE, str(dest), mode],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return got


def make_qcow2(tmp: Path, mib: int) -> Path:
    """A real qcow2 (qemu-img) whose clusters hold `mib` MiB of incompressible data."""
    raw = tmp / "disk.raw"
    with raw.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    qcow2 = tmp / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True
    )
    raw.unlink()
    return qcow2


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_vm_image_export_import_streams_the_qcow2(
    incus: PylxdIncus, session_project: str, state_dirs: Path, tmp_path: Path
) -> None:
    qcow2 = make_qcow2(tmp_path, DISK_MIB)
    disk_sha, disk_size = sha256(qcow2), qcow2.stat().st_size
    props = {
        "plex.plex": PLEX,
        "plex.role": ROLE,
        "plex.virt": "vm",
        "plex.digest": DIGEST,
        "plex.package_digest": PKG,
    }
    fp = import_vm_image(incus, qcow2, f"plex {PLEX}/{ROLE} (vm)", props)
    img = incus.sync("GET", f"images/{fp}", what="image")
    assert img["type"] == "virtual-machine"
    save_catalog(
        load_catalog(PLEX).record(
            Entry(ROLE, DIGEST, PKG, fp, baked_at=1.0, size=disk_size, virt="vm")
        )
    )
    out = tmp_path / "out"
    try:
        exported = run_child(session_project, "export", out)
        artifact = Path(exported["artifact"])
        manifest = art.load_manifest(art.manifest_path_for(artifact))
        assert (manifest.virt, manifest.disk_format) == ("vm", "qcow2")
        assert json.loads(art.manifest_path_for(artifact).read_text())["disk_format"] == "qcow2"
        # The artifact is a unified VM image: metadata.yaml (with plex's properties), then the
        # qcow2 byte for byte as rootfs.img.
        members = {}
        with (
            artifact.open("rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw) as unz,
            tarfile.open(fileobj=unz, mode="r|") as tar,
        ):
            for m in tar:
                f = tar.extractfile(m) if m.isreg() else None
                if m.name == "rootfs.img" and f is not None:
                    h = hashlib.sha256()
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                    members[m.name] = h.hexdigest()
                elif f is not None:
                    members[m.name] = f.read().decode()
        assert next(iter(members)) == "metadata.yaml"
        assert members["rootfs.img"] == disk_sha
        assert f"plex.digest: {DIGEST}" in members["metadata.yaml"]
        # Back into Incus, from the artifact alone: the original image and catalog are gone.
        incus.delete_image(fp)
        save_catalog(load_catalog(PLEX).remove(ROLE, DIGEST))
        imported = run_child(session_project, "import", artifact)
        back = incus.image_by_alias(digest_alias(PLEX, ROLE, DIGEST))
        assert back is not None and back.fingerprint == manifest.sha256
        got = incus.sync("GET", f"images/{back.fingerprint}", what="image")
        assert got["type"] == "virtual-machine"
        assert got["properties"]["plex.virt"] == "vm"
        entry = load_catalog(PLEX).find(ROLE, DIGEST)
        assert entry is not None and entry.virt == "vm" and entry.fingerprint == back.fingerprint
        # Memory: far below the disk, in both directions.
        for what, r in (("export", exported), ("import", imported)):
            extra_mib = (r["peak_kib"] - r["baseline_kib"]) / 1024
            print(
                f"{what}: disk {disk_size / 2**20:.0f} MiB, peak RSS "
                f"{r['peak_kib'] / 1024:.0f} MiB (baseline {r['baseline_kib'] / 1024:.0f} MiB, "
                f"+{extra_mib:.0f} MiB)"
            )
            assert extra_mib < MAX_EXTRA_MIB, f"{what} grew by {extra_mib:.0f} MiB"
    finally:
        for i in incus.images():
            if i.properties.get("plex.plex") == PLEX:
                incus.delete_image(i.fingerprint)
