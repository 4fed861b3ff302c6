"""Packing: Incus's export file(s) -> one unified, zstd-compressed image tarball, in one pass."""

from __future__ import annotations

import copy
import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import yaml
import zstandard

from plex.services.images.streaming import (
    CHUNK,
    READ_ERRORS,
    Counter,
    CountingWriter,
    HashingWriter,
    Progress,
    Tee,
    atomic_file,
    norm,
    open_tar_stream,
    tar_error,
)

DEFAULT_LEVEL = 3  # zstd: level 3 on every core compresses faster than the disk writes
DPKG_STATUS = "rootfs/var/lib/dpkg/status"
VM_DISK = "rootfs.img"
QCOW2_MAGIC = b"QFI\xfb"  # qemu docs/interop/qcow2.txt: the header's first four bytes


def parse_dpkg_status(text: str) -> tuple[str, ...]:
    """The installed packages of a dpkg status file as sorted "name version" lines."""
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation lines (descriptions, conffiles)
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "package" in fields and fields.get("status", "").endswith(" installed"):
            out.append(f"{fields['package']} {fields.get('version', '')}".strip())
    return tuple(sorted(out))


@dataclass(frozen=True)
class Packed:
    sha256: str
    size: int
    uncompressed_size: int
    packages: tuple[str, ...]
    virt: str = "container"  # "vm": the artifact holds a qcow2 disk as rootfs.img


def compressor(level: int) -> zstandard.ZstdCompressor:
    # threads=-1: one worker per core; the output is still one standard zstd frame.
    return zstandard.ZstdCompressor(level=level, threads=-1)


def pack_unified(
    src: Path, out: Path, level: int = DEFAULT_LEVEL, progress: Progress | None = None
) -> Packed:
    """Compress a unified image tarball into `out`, copying its tar bytes exactly, and read the
    package list from rootfs/var/lib/dpkg/status on the way (one pass)."""
    with atomic_file(out) as f:
        hashed = HashingWriter(f)
        with compressor(level).stream_writer(cast(IO[bytes], hashed), closefd=False) as zw:
            counted = CountingWriter(zw)
            with open_tar_stream(src, progress) as raw:
                tee = Tee(raw, counted)
                packages = _scan_packages(tee, src)
                # tarfile stops at the end-of-archive marker; the record padding after it is
                # part of the image too.
                while tee.read(CHUNK):
                    pass
    return Packed(hashed.sha.hexdigest(), hashed.size, counted.size, packages)


def _scan_packages(stream: Any, path: Path) -> tuple[str, ...]:
    status: bytes | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                if m.isreg() and norm(m.name) == DPKG_STATUS:
                    got = tar.extractfile(m)
                    status = got.read() if got else None
    except READ_ERRORS as e:
        raise tar_error(path, e) from None
    return parse_dpkg_status(status.decode(errors="replace")) if status else ()


def pack_split(
    metadata: Path,
    rootfs: Path,
    out: Path,
    properties: dict[str, str],
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
) -> Packed:
    """Combine a split image (metadata tarball + rootfs) into one unified tarball: metadata.yaml
    and templates/ first, then a container's rootfs tarball under rootfs/, or a VM's qcow2 disk
    as the single member `rootfs.img` (the unified layout Incus reads as a VM image:
    lxc/incus cmd/incusd/images.go getImageMetadata, v6.0.4 line 1372).

    The image's Incus properties are merged into metadata.yaml: a split image keeps them only in
    the Incus database, and the artifact must carry them (plex.digest) on its own.
    """
    total = metadata.stat().st_size + rootfs.stat().st_size
    status: bytes | None = None
    vm = is_qcow2(rootfs)
    with atomic_file(out) as f:
        hashed = HashingWriter(f)
        with compressor(level).stream_writer(cast(IO[bytes], hashed), closefd=False) as zw:
            counted = CountingWriter(zw)
            with tarfile.open(
                fileobj=cast(IO[bytes], counted),
                mode="w|",
                format=tarfile.PAX_FORMAT,
            ) as dst:
                _copy_metadata(metadata, dst, properties, progress, total)
                base = metadata.stat().st_size
                if vm:
                    _copy_disk(rootfs, dst, progress, base, total)
                else:
                    status = _copy_rootfs(rootfs, dst, progress, base, total)
    packages = parse_dpkg_status(status.decode(errors="replace")) if status else ()
    virt = "vm" if vm else "container"
    return Packed(hashed.sha.hexdigest(), hashed.size, counted.size, packages, virt)


def is_qcow2(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == QCOW2_MAGIC


def _copy_disk(
    path: Path, dst: tarfile.TarFile, progress: Progress | None, base: int, total: int
) -> None:
    """The VM disk as `rootfs.img`, streamed: tarfile copies it 16 KiB at a time."""
    info = tarfile.TarInfo(VM_DISK)
    info.size, info.mode, info.mtime = path.stat().st_size, 0o644, int(time.time())
    with path.open("rb") as f:
        dst.addfile(info, Counter(f, progress, base, total))


def _copy_metadata(
    path: Path,
    dst: tarfile.TarFile,
    properties: dict[str, str],
    progress: Progress | None,
    total: int,
) -> None:
    try:
        with (
            open_tar_stream(path, progress, 0, total) as raw,
            tarfile.open(fileobj=raw, mode="r|") as src,
        ):
            for m in src:
                name = norm(m.name)
                if m.isreg() and name == "metadata.yaml":
                    got = src.extractfile(m)
                    meta = yaml.safe_load(got.read() if got else b"") or {}
                    meta["properties"] = {**(meta.get("properties") or {}), **properties}
                    data = yaml.safe_dump(meta, sort_keys=True).encode()
                    info = copy.copy(m)
                    info.name, info.size = name, len(data)
                    dst.addfile(info, io.BytesIO(data))
                elif name == "templates" or name.startswith("templates/"):
                    m.name = name
                    dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    except (*READ_ERRORS, yaml.YAMLError) as e:
        raise tar_error(path, e) from None


def _copy_rootfs(
    path: Path, dst: tarfile.TarFile, progress: Progress | None, base: int, total: int
) -> bytes | None:
    status: bytes | None = None
    top = tarfile.TarInfo("rootfs")
    top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    dst.addfile(top)
    try:
        with (
            open_tar_stream(path, progress, base, total) as raw,
            tarfile.open(fileobj=raw, mode="r|") as src,
        ):
            for m in src:
                name = norm(m.name)
                if not name:
                    continue  # "./": the rootfs/ entry above stands for it
                m.name = f"rootfs/{name}"
                if m.islnk():
                    # Hard link targets are archive paths: they move under rootfs/ too.
                    m.linkname = f"rootfs/{norm(m.linkname)}"
                if m.isreg() and name == "var/lib/dpkg/status":
                    got = src.extractfile(m)
                    status = got.read() if got else b""
                    dst.addfile(m, io.BytesIO(status))
                else:
                    dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    except READ_ERRORS as e:
        raise tar_error(path, e) from None
    return status
