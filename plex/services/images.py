"""Image artifacts: a baked image as one portable file, its manifest, import, prune and listing.

An artifact is a UNIFIED Incus image tarball (metadata.yaml + templates/ + rootfs/) compressed
with multi-threaded zstandard, `<plex>-<role>-<digest12>.tar.zst`, next to its manifest
`<plex>-<role>-<digest12>.json` (sha256 and size of the file, the recipe digest, provenance and
the Debian packages inside). Incus stores plex images uncompressed (publish is faster that way),
so compression happens here, once, on export, on every core.

Everything streams: no image is ever held in memory, and every file appears under its final name
only when complete (temporary file, then rename).
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import yaml
import zstandard

from plex.backends.incus import ImageInfo, Incus
from plex.errors import ArtifactError, UsageError
from plex.model.image import digest_alias, image_alias, package_alias
from plex.model.observed import Observed
from plex.model.plex import Role
from plex.store.catalog import Catalog, Entry, load_catalog, save_catalog
from plex.store.lock import plex_lock
from plex.store.state import cache_root, state_root

FORMAT = "plex-image/1"
SUFFIX = ".tar.zst"
DEFAULT_LEVEL = 3  # zstd: level 3 on every core compresses faster than the disk writes
CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DPKG_STATUS = "rootfs/var/lib/dpkg/status"
PKG_LAYER_PREFIX = "plex-pkg/"

# Progress: (bytes done, bytes total). Called often; must be cheap.
Progress = Callable[[int, int], None]


# -- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    plex: str
    role: str
    digest: str
    package_digest: str
    sha256: str  # of the .tar.zst file
    size: int  # of the .tar.zst file
    fingerprint: str  # of the source image in the exporting Incus
    packages: tuple[str, ...] = ()  # "name version", sorted; empty for non-Debian images
    inputs: dict[str, Any] = field(default_factory=dict)  # the catalog entry's provenance
    exported_at: float = 0.0
    baked_at: float = 0.0
    uncompressed_size: int = 0
    format: str = FORMAT

    @property
    def short(self) -> str:
        return self.digest[:12]

    @property
    def filename(self) -> str:
        return artifact_name(self.plex, self.role, self.digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "plex": self.plex,
            "role": self.role,
            "digest": self.digest,
            "package_digest": self.package_digest,
            "sha256": self.sha256,
            "size": self.size,
            "fingerprint": self.fingerprint,
            "uncompressed_size": self.uncompressed_size,
            "baked_at": self.baked_at,
            "exported_at": self.exported_at,
            "packages": list(self.packages),
            "inputs": self.inputs,
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> Manifest:
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: manifest is not a JSON object")
        if data.get("format") != FORMAT:
            raise ArtifactError(
                f"{source}: unknown manifest format {data.get('format')!r} (expected {FORMAT!r})"
            )
        try:
            return cls(
                plex=str(data["plex"]),
                role=str(data["role"]),
                digest=str(data["digest"]),
                package_digest=str(data.get("package_digest", "")),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                fingerprint=str(data.get("fingerprint", "")),
                packages=tuple(str(p) for p in data.get("packages", [])),
                inputs=dict(data.get("inputs", {})),
                exported_at=float(data.get("exported_at", 0.0)),
                baked_at=float(data.get("baked_at", 0.0)),
                uncompressed_size=int(data.get("uncompressed_size", 0)),
            )
        except KeyError as e:
            raise ArtifactError(f"{source}: manifest has no {e.args[0]!r} field") from None
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: manifest field has a wrong type ({e})") from None


def artifact_name(plex_name: str, role: Role | str, digest: str) -> str:
    return f"{plex_name}-{role}-{digest[:12]}{SUFFIX}"


def manifest_path_for(artifact: Path) -> Path:
    """`x.tar.zst` -> `x.json` (the manifest sits next to its artifact)."""
    name = artifact.name
    base = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    return artifact.with_name(f"{base}.json")


def load_manifest(path: Path) -> Manifest:
    if not path.is_file():
        raise ArtifactError(
            f"{path}: manifest not found",
            hint="export writes it next to the .tar.zst; pass --manifest FILE",
        )
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({e})") from None
    return Manifest.from_json(data, path)


def open_artifact(path: Path, manifest_path: Path | None = None) -> Manifest:
    """The manifest of an artifact that exists (default: the .json next to it)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact not found")
    return load_manifest(manifest_path or manifest_path_for(path))


def write_manifest(manifest: Manifest, path: Path) -> None:
    raw = (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()
    with _atomic_file(path) as f:
        f.write(raw)


# -- streaming plumbing ------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_file(final: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A temporary file next to `final`, renamed onto it only when the block succeeds: a killed
    export leaves a hidden `.part` file, never a truncated artifact under the final name."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp_path.replace(final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


class _Counter(io.RawIOBase):
    """Reads a file, reporting how far it got (the progress of a whole multi-file job)."""

    def __init__(self, f: IO[bytes], progress: Progress | None, base: int, total: int) -> None:
        self.f = f
        self.progress = progress
        self.done = base
        self.total = total

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.done += len(data)
        if self.progress is not None and data:
            self.progress(self.done, self.total)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Tee:
    """What tarfile reads from `src` is also written to `sink`: parse and copy in one pass."""

    def __init__(self, src: IO[bytes], sink: Any) -> None:
        self.src = src
        self.sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        if data:
            self.sink.write(data)
        return data


class _HashingWriter:
    """The final file's sha256 and size, computed as the compressor writes it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.f.write(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


class _CountingWriter:
    """Counts the uncompressed bytes going into the compressor."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.f.write(data)
        return len(data)


def _decompressed(raw: io.BufferedReader[Any], what: Path) -> IO[bytes]:
    """`raw` as an uncompressed tar stream, whatever Incus stored (plain, zstd, gzip, xz, bz2)."""
    head = raw.peek(6)[:6]
    if head.startswith(ZSTD_MAGIC):
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
        return reader
    if head.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"hsqs"):
        raise ArtifactError(
            f"{what}: squashfs image rootfs is not supported",
            hint="plex exports tar-based container images",
        )
    return raw


@contextlib.contextmanager
def _open_tar_stream(
    path: Path, progress: Progress | None = None, base: int = 0, total: int = 0
) -> Iterator[IO[bytes]]:
    with path.open("rb") as f:
        counted = io.BufferedReader(
            _Counter(f, progress, base, total or path.stat().st_size), CHUNK
        )
        yield _decompressed(counted, path)


def _norm(name: str) -> str:
    """`./etc/x/`, `/etc/x` -> `etc/x`; `.` and `./` -> `` (tar writers differ)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


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


# A damaged tarball or compressed stream (not a failing disk: that stays an OSError).
_READ_ERRORS = (tarfile.TarError, zstandard.ZstdError, gzip.BadGzipFile, lzma.LZMAError, EOFError)


def _tar_error(path: Path, e: Exception) -> ArtifactError:
    return ArtifactError(f"{path}: not a readable image tarball ({e})")


# -- packing: Incus's export file(s) -> one unified .tar.zst -----------------------------------


@dataclass(frozen=True)
class Packed:
    sha256: str
    size: int
    uncompressed_size: int
    packages: tuple[str, ...]


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # threads=-1: one worker per core; the output is still one standard zstd frame.
    return zstandard.ZstdCompressor(level=level, threads=-1)


def pack_unified(
    src: Path, out: Path, level: int = DEFAULT_LEVEL, progress: Progress | None = None
) -> Packed:
    """Compress a unified image tarball into `out`, copying its tar bytes exactly, and read the
    package list from rootfs/var/lib/dpkg/status on the way (one pass)."""
    with _atomic_file(out) as f:
        hashed = _HashingWriter(f)
        with _compressor(level).stream_writer(cast(IO[bytes], hashed), closefd=False) as zw:
            counted = _CountingWriter(zw)
            with _open_tar_stream(src, progress) as raw:
                tee = _Tee(raw, counted)
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
                if m.isreg() and _norm(m.name) == DPKG_STATUS:
                    got = tar.extractfile(m)
                    status = got.read() if got else None
    except _READ_ERRORS as e:
        raise _tar_error(path, e) from None
    return parse_dpkg_status(status.decode(errors="replace")) if status else ()


def pack_split(
    metadata: Path,
    rootfs: Path,
    out: Path,
    properties: dict[str, str],
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
) -> Packed:
    """Combine a split image (metadata tarball + rootfs tarball) into one unified tarball:
    metadata.yaml and templates/ first, then the rootfs under rootfs/.

    The image's Incus properties are merged into metadata.yaml: a split image keeps them only in
    the Incus database, and the artifact must carry them (plex.digest) on its own.
    """
    total = metadata.stat().st_size + rootfs.stat().st_size
    status: bytes | None = None
    with _atomic_file(out) as f:
        hashed = _HashingWriter(f)
        with _compressor(level).stream_writer(cast(IO[bytes], hashed), closefd=False) as zw:
            counted = _CountingWriter(zw)
            with tarfile.open(
                fileobj=cast(IO[bytes], counted), mode="w|", format=tarfile.PAX_FORMAT
            ) as dst:
                _copy_metadata(metadata, dst, properties, progress, total)
                status = _copy_rootfs(rootfs, dst, progress, metadata.stat().st_size, total)
    packages = parse_dpkg_status(status.decode(errors="replace")) if status else ()
    return Packed(hashed.sha.hexdigest(), hashed.size, counted.size, packages)


def _copy_metadata(
    path: Path,
    dst: tarfile.TarFile,
    properties: dict[str, str],
    progress: Progress | None,
    total: int,
) -> None:
    try:
        with (
            _open_tar_stream(path, progress, 0, total) as raw,
            tarfile.open(fileobj=raw, mode="r|") as src,
        ):
            for m in src:
                name = _norm(m.name)
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
    except (*_READ_ERRORS, yaml.YAMLError) as e:
        raise _tar_error(path, e) from None


def _copy_rootfs(
    path: Path, dst: tarfile.TarFile, progress: Progress | None, base: int, total: int
) -> bytes | None:
    status: bytes | None = None
    top = tarfile.TarInfo("rootfs")
    top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    dst.addfile(top)
    try:
        with (
            _open_tar_stream(path, progress, base, total) as raw,
            tarfile.open(fileobj=raw, mode="r|") as src,
        ):
            for m in src:
                name = _norm(m.name)
                if not name:
                    continue  # "./": the rootfs/ entry above stands for it
                m.name = f"rootfs/{name}"
                if m.islnk():
                    # Hard link targets are archive paths: they move under rootfs/ too.
                    m.linkname = f"rootfs/{_norm(m.linkname)}"
                if m.isreg() and name == "var/lib/dpkg/status":
                    got = src.extractfile(m)
                    status = got.read() if got else b""
                    dst.addfile(m, io.BytesIO(status))
                else:
                    dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    except _READ_ERRORS as e:
        raise _tar_error(path, e) from None
    return status


# -- reading artifacts -------------------------------------------------------------------------


def iter_artifact_members(path: Path, max_size: int = 1 << 20) -> Iterator[tuple[str, bytes]]:
    """Stream an artifact (or any image tarball) and yield (name, content) of every regular file
    of at most `max_size` bytes; bigger files are skipped unread. For scanning images (keys)."""
    try:
        with _open_tar_stream(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                if m.isreg() and m.size <= max_size:
                    got = tar.extractfile(m)
                    yield _norm(m.name), got.read() if got else b""
    except _READ_ERRORS as e:
        raise _tar_error(path, e) from None


def read_metadata(path: Path) -> dict[str, Any] | None:
    """metadata.yaml of an image tarball, reading only up to it (it precedes rootfs/)."""
    try:
        with _open_tar_stream(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                name = _norm(m.name)
                if name == "metadata.yaml" and m.isreg():
                    got = tar.extractfile(m)
                    data = yaml.safe_load(got.read() if got else b"")
                    return data if isinstance(data, dict) else None
                if name.startswith("rootfs/"):
                    return None
    except (*_READ_ERRORS, yaml.YAMLError) as e:
        raise _tar_error(path, e) from None
    return None


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    sha = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return sha.hexdigest()


def verify_artifact(path: Path, manifest: Manifest, progress: Progress | None = None) -> None:
    """Refuse a file that is not exactly what its manifest describes."""
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact not found")
    size = path.stat().st_size
    if size != manifest.size:
        raise ArtifactError(
            f"{path}: size {size} does not match the manifest's {manifest.size}",
            hint="the file is truncated or not the one the manifest describes",
        )
    with path.open("rb") as f:
        if f.read(4) != ZSTD_MAGIC:
            raise ArtifactError(f"{path}: not a zstd-compressed image tarball")
    got = sha256_file(path, progress)
    if got != manifest.sha256:
        raise ArtifactError(
            f"{path}: sha256 {got[:16]}... does not match the manifest's {manifest.sha256[:16]}...",
            hint="the file is corrupted; export it again",
        )
    props = (read_metadata(path) or {}).get("properties") or {}
    for key, want in (("plex.digest", manifest.digest), ("plex.role", manifest.role)):
        have = props.get(key)
        if have is not None and str(have) != want:
            raise ArtifactError(
                f"{path}: image {key} {str(have)[:12]} does not match the manifest's {want[:12]}"
            )


# -- export ------------------------------------------------------------------------------------


def find_entry(catalog: Catalog, role: Role | str, digest: str | None = None) -> Entry:
    """The role's newest catalog entry, or the one whose digest starts with `digest`."""
    gens = catalog.generations(role)
    where = f"{catalog.plex}/{role}"
    if digest is None:
        if not gens:
            raise UsageError(
                f"no {where} image in the catalog",
                hint=f"bake it first: plex bake {catalog.plex} -t {role}",
            )
        return gens[0]
    matches = [e for e in gens if e.digest.startswith(digest)]
    if not matches:
        raise UsageError(
            f"no {where} image with digest {digest} in the catalog",
            hint=f"plex image list {catalog.plex}",
        )
    if len(matches) > 1:
        raise UsageError(
            f"digest {digest} matches {len(matches)} {where} images", hint="give more digits"
        )
    return matches[0]


def _image(incus: Incus, fingerprint: str) -> ImageInfo | None:
    return next((i for i in incus.images() if i.fingerprint == fingerprint), None)


def export_image(
    incus: Incus,
    plex_name: str,
    role: Role | str,
    dest_dir: Path,
    digest: str | None = None,
    *,
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
) -> Manifest:
    """Write `<plex>-<role>-<digest12>.tar.zst` and its manifest into `dest_dir`."""
    entry = find_entry(load_catalog(plex_name), role, digest)
    info = _image(incus, entry.fingerprint)
    if info is None:
        raise ArtifactError(
            f"{plex_name}/{role}@{entry.short}: in the catalog but image "
            f"{entry.fingerprint[:12]} is missing in Incus project {incus.project}",
            hint=f"re-bake it: plex bake {plex_name} -t {role}",
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / artifact_name(plex_name, role, entry.digest)
    # Incus's own export lands next to the artifact (same filesystem) and is always removed.
    work = Path(tempfile.mkdtemp(prefix=".plex-export-", dir=dest_dir))
    try:
        files = incus.export_image(entry.fingerprint, work)
        if len(files) == 1:
            packed = pack_unified(files[0], out, level, progress)
        elif len(files) == 2:
            meta = next((p for p in files if p.name.startswith("meta-")), None)
            if meta is None:
                raise ArtifactError(
                    f"Incus exported {[p.name for p in files]} for "
                    f"{entry.fingerprint[:12]}: no metadata part"
                )
            rootfs = next(p for p in files if p != meta)
            packed = pack_split(meta, rootfs, out, info.properties, level, progress)
        else:
            raise ArtifactError(
                f"Incus exported {len(files)} files for image "
                f"{entry.fingerprint[:12]} (expected 1 or 2)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = Manifest(
        plex=plex_name,
        role=str(role),
        digest=entry.digest,
        package_digest=entry.package_digest,
        sha256=packed.sha256,
        size=packed.size,
        fingerprint=entry.fingerprint,
        packages=packed.packages,
        inputs=entry.inputs,
        exported_at=round(time.time(), 3),
        baked_at=entry.baked_at,
        uncompressed_size=packed.uncompressed_size,
    )
    # The manifest last: a manifest next to an artifact means the artifact is complete.
    write_manifest(manifest, manifest_path_for(out))
    return manifest


# -- import ------------------------------------------------------------------------------------


def already_imported(incus: Incus, manifest: Manifest) -> ImageInfo | None:
    """The Incus image that already holds this artifact's content, if any: the artifact itself
    (same fingerprint) or any image under its pinned alias with the same plex.digest."""
    same = _image(incus, manifest.sha256)
    if same is not None:
        return same
    pinned = incus.image_by_alias(digest_alias(manifest.plex, manifest.role, manifest.digest))
    if pinned is None:
        return None
    if pinned.properties.get("plex.digest") != manifest.digest:
        raise ArtifactError(
            f"alias {digest_alias(manifest.plex, manifest.role, manifest.digest)} points at "
            f"image {pinned.fingerprint[:12]} with digest "
            f"{pinned.properties.get('plex.digest', '?')[:12]}, not {manifest.short}",
            hint="delete that alias or image first",
        )
    return pinned


def import_image(
    incus: Incus,
    artifact_path: Path,
    manifest_path: Path | None = None,
    *,
    progress: Progress | None = None,
) -> Manifest:
    """Verify an artifact against its manifest, import it, pin it as `<plex>/<role>@<digest12>`
    and record it in the catalog. The moving alias is NOT touched: deploy keeps using what it
    used until the image is promoted. Importing what is already there changes nothing."""
    manifest = open_artifact(artifact_path, manifest_path)
    verify_artifact(artifact_path, manifest, progress)
    with plex_lock(manifest.plex, "bake"):  # the catalog has one writer at a time
        have = already_imported(incus, manifest)
        if have is None:
            fingerprint = incus.import_image(
                artifact_path,
                None,
                {
                    "plex.plex": manifest.plex,
                    "plex.role": manifest.role,
                    "plex.digest": manifest.digest,
                    "plex.package_digest": manifest.package_digest,
                },
            )
            have = _image(incus, fingerprint)
            size = have.size if have else manifest.uncompressed_size
        else:
            fingerprint, size = have.fingerprint, have.size
        incus.set_alias(
            digest_alias(manifest.plex, manifest.role, manifest.digest),
            fingerprint,
            f"imported from {artifact_path.name}",
        )
        catalog = load_catalog(manifest.plex)
        known = catalog.find(manifest.role, manifest.digest)
        if known is None or known.fingerprint != fingerprint:
            entry = Entry(
                role=manifest.role,
                digest=manifest.digest,
                package_digest=manifest.package_digest,
                fingerprint=fingerprint,
                baked_at=manifest.baked_at or manifest.exported_at,
                size=size,
                inputs=manifest.inputs,
            )
            save_catalog(catalog.record(entry))
    return manifest


# -- prune -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kept:
    entry: Entry
    reasons: tuple[str, ...]  # "newest", "current", "channel stable", "node demo-agent1"


@dataclass(frozen=True)
class Layer:
    package_digest: str
    fingerprint: str | None  # None: only the cached rootfs is left


@dataclass(frozen=True)
class PrunePlan:
    plex: str
    keep: int
    remove: tuple[Entry, ...]
    kept: tuple[Kept, ...]
    layers: tuple[Layer, ...]  # package layers no remaining image needs
    cache_files: tuple[Path, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "plex": self.plex,
            "keep": self.keep,
            "remove": [
                {"role": e.role, "digest": e.digest, "fingerprint": e.fingerprint}
                for e in self.remove
            ],
            "kept": [
                {"role": k.entry.role, "digest": k.entry.digest, "reasons": list(k.reasons)}
                for k in self.kept
            ],
            "layers": [
                {"package_digest": la.package_digest, "fingerprint": la.fingerprint}
                for la in self.layers
            ],
            "cache_files": [str(p) for p in self.cache_files],
        }


def _in_use(observed: Observed) -> dict[str, list[str]]:
    """digest -> names of the plex's instances created from it."""
    used: dict[str, list[str]] = {}
    for inst in observed.instances.values():
        if inst.image:
            used.setdefault(inst.image, []).append(inst.name)
    return used


def _all_catalog_package_digests(except_plex: str) -> set[str]:
    """Package digests other plexes' catalogs on this host still use (the layer cache is
    shared by every plex)."""
    out: set[str] = set()
    root = state_root()
    if not root.is_dir():
        return out
    for path in root.glob("*/catalog.json"):
        if path.parent.name == except_plex:
            continue
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            out |= {str(e.get("package_digest")) for e in data.get("entries", [])}
    return out


def plan_prune(incus: Incus, plex_name: str, keep: int) -> PrunePlan:
    """What `prune` would delete: everything beyond the newest `keep` generations of each role
    that no moving alias, channel or instance uses, and the package layers left unneeded."""
    if keep < 0:
        raise UsageError(f"--keep must be 0 or more, not {keep}")
    catalog = load_catalog(plex_name)
    observed = incus.observe(plex_name)
    used = _in_use(observed)
    remove: list[Entry] = []
    kept: list[Kept] = []
    for role in sorted({e.role for e in catalog.entries}):
        for i, e in enumerate(catalog.generations(role)):
            reasons = []
            if i < keep:
                reasons.append("newest")
            if observed.aliases.get(image_alias(plex_name, role)) == e.fingerprint:
                reasons.append("current")
            reasons += [
                f"channel {c}"
                for c, m in sorted(catalog.channels.items())
                if m.get(role) == e.digest
            ]
            reasons += [f"node {n}" for n in sorted(used.get(e.digest, []))]
            if reasons:
                kept.append(Kept(e, tuple(reasons)))
            else:
                remove.append(e)
    removed_fps = {e.fingerprint for e in remove}
    images = incus.images()
    # A layer stays while any remaining image needs it: this plex's kept entries, and any other
    # plex image in the same project (projects may be shared).
    needed = {k.entry.package_digest for k in kept}
    needed |= {
        img.properties.get("plex.package_digest", "")
        for img in images
        if "plex.digest" in img.properties and img.fingerprint not in removed_fps
    }
    # ...and other plexes' catalogs on this host (they may share the project; the layer cache
    # is shared by all of them anyway).
    needed |= _all_catalog_package_digests(plex_name)
    layers = []
    for img in images:
        pkg = img.properties.get("plex.package_digest", "")
        # Role images inherit `plex.layer: package` from the layer they were published from:
        # only an image without a recipe digest is a layer.
        is_layer = "plex.digest" not in img.properties and (
            img.properties.get("plex.layer") == "package"
            or any(a.startswith(PKG_LAYER_PREFIX) for a in img.aliases)
        )
        if is_layer and pkg and pkg not in needed:
            layers.append(Layer(pkg, img.fingerprint))
    layer_digests = {la.package_digest for la in layers}
    # Removed entries whose layer image is already gone may still have a cached rootfs.
    for e in remove:
        if e.package_digest and e.package_digest not in needed | layer_digests:
            layers.append(Layer(e.package_digest, None))
            layer_digests.add(e.package_digest)
    cache = cache_root() / "layers"
    cache_files = [
        p
        for d in sorted(layer_digests)
        for p in (cache / f"{d}.tar", cache / f"{d}.meta.tar")
        if p.exists()
    ]
    return PrunePlan(plex_name, keep, tuple(remove), tuple(kept), tuple(layers), tuple(cache_files))


def apply_prune(incus: Incus, plan: PrunePlan) -> None:
    have = {i.fingerprint for i in incus.images()}
    for e in plan.remove:
        if e.fingerprint in have:
            incus.delete_image(e.fingerprint)  # takes its aliases with it
        incus.delete_alias(digest_alias(plan.plex, e.role, e.digest))
    catalog = load_catalog(plan.plex)
    for e in plan.remove:
        catalog = catalog.remove(e.role, e.digest)
    save_catalog(catalog)
    for la in plan.layers:
        if la.fingerprint and la.fingerprint in have:
            incus.delete_image(la.fingerprint)
        incus.delete_alias(package_alias(la.package_digest))
    for p in plan.cache_files:
        p.unlink(missing_ok=True)


def prune(incus: Incus, plex_name: str, keep: int, *, dry_run: bool = False) -> list[Entry]:
    """Delete old generations (see plan_prune); returns the entries removed (or, with
    `dry_run`, that would be)."""
    if dry_run:
        return list(plan_prune(incus, plex_name, keep).remove)
    with plex_lock(plex_name, "bake"):  # never while a bake or import writes the catalog
        plan = plan_prune(incus, plex_name, keep)
        apply_prune(incus, plan)
    return list(plan.remove)


# -- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    role: str
    digest: str
    fingerprint: str
    size: int
    baked_at: float
    aliases: tuple[str, ...] = ()
    current: bool = False  # the moving alias <plex>/<role> points at it
    channels: tuple[str, ...] = ()
    in_use: tuple[str, ...] = ()  # instance names
    missing: bool = False  # the catalog knows it, Incus lost it
    in_catalog: bool = True  # False: an Incus image marked for this plex the catalog forgot

    @property
    def digest12(self) -> str:
        return self.digest[:12]

    @property
    def fingerprint12(self) -> str:
        return self.fingerprint[:12]

    @property
    def markers(self) -> tuple[str, ...]:
        out = []
        if self.current:
            out.append("current")
        out += self.channels
        if self.in_use:
            out.append("in-use")
        if self.missing:
            out.append("missing in Incus")
        if not self.in_catalog:
            out.append("not in catalog")
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "digest": self.digest,
            "fingerprint": self.fingerprint,
            "size": self.size,
            "baked_at": self.baked_at,
            "aliases": list(self.aliases),
            "current": self.current,
            "channels": list(self.channels),
            "in_use": list(self.in_use),
            "missing": self.missing,
            "in_catalog": self.in_catalog,
        }


def list_images(incus: Incus, plex_name: str) -> list[Row]:
    """The plex's images, catalog joined with Incus: per role, newest first."""
    catalog = load_catalog(plex_name)
    images = {i.fingerprint: i for i in incus.images()}
    observed = incus.observe(plex_name)
    used = _in_use(observed)
    rows = []
    for role in sorted({e.role for e in catalog.entries}):
        for e in catalog.generations(role):
            img = images.get(e.fingerprint)
            rows.append(
                Row(
                    role=role,
                    digest=e.digest,
                    fingerprint=e.fingerprint,
                    size=img.size if img else e.size,
                    baked_at=e.baked_at,
                    aliases=tuple(sorted(img.aliases)) if img else (),
                    current=observed.aliases.get(image_alias(plex_name, role)) == e.fingerprint,
                    channels=tuple(
                        c for c, m in sorted(catalog.channels.items()) if m.get(role) == e.digest
                    ),
                    in_use=tuple(sorted(used.get(e.digest, []))),
                    missing=img is None,
                )
            )
    known = {e.fingerprint for e in catalog.entries}
    for img in sorted(images.values(), key=lambda i: i.created_at):
        props = img.properties
        if props.get("plex.plex") == plex_name and img.fingerprint not in known:
            digest = props.get("plex.digest", "")
            rows.append(
                Row(
                    role=props.get("plex.role", "?"),
                    digest=digest,
                    fingerprint=img.fingerprint,
                    size=img.size,
                    baked_at=float(props.get("plex.baked_at", 0) or 0),
                    aliases=tuple(sorted(img.aliases)),
                    current=observed.aliases.get(
                        image_alias(plex_name, props.get("plex.role", "?"))
                    )
                    == img.fingerprint,
                    in_use=tuple(sorted(used.get(digest, []))) if digest else (),
                    in_catalog=False,
                )
            )
    return rows


__all__ = [
    "Manifest",
    "Packed",
    "PrunePlan",
    "Row",
    "already_imported",
    "apply_prune",
    "artifact_name",
    "export_image",
    "find_entry",
    "import_image",
    "iter_artifact_members",
    "list_images",
    "load_manifest",
    "manifest_path_for",
    "open_artifact",
    "pack_split",
    "pack_unified",
    "parse_dpkg_status",
    "plan_prune",
    "prune",
    "read_metadata",
    "verify_artifact",
    "write_manifest",
]
