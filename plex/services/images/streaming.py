"""Streaming plumbing of image artifacts: atomic files, counting/hashing writers, a reader that
decompresses whatever Incus stored. Nothing here holds an image in memory."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard

from plex.errors import ArtifactError

CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Progress: (bytes done, bytes total). Called often; must be cheap.
Progress = Callable[[int, int], None]


@contextlib.contextmanager
def atomic_file(final: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
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


class Counter(io.RawIOBase):
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


class Tee:
    """What tarfile reads from `src` is also written to `sink`: parse and copy in one pass."""

    def __init__(self, src: IO[bytes], sink: Any) -> None:
        self.src = src
        self.sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        if data:
            self.sink.write(data)
        return data


class HashingWriter:
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


class CountingWriter:
    """Counts the uncompressed bytes going into the compressor."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.f.write(data)
        return len(data)


def decompressed(raw: io.BufferedReader[Any], what: Path) -> IO[bytes]:
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
def open_tar_stream(
    path: Path, progress: Progress | None = None, base: int = 0, total: int = 0
) -> Iterator[IO[bytes]]:
    with path.open("rb") as f:
        counted = io.BufferedReader(Counter(f, progress, base, total or path.stat().st_size), CHUNK)
        yield decompressed(counted, path)


def norm(name: str) -> str:
    """`./etc/x/`, `/etc/x` -> `etc/x`; `.` and `./` -> `` (tar writers differ)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


# A damaged tarball or compressed stream (not a failing disk: that stays an OSError).
READ_ERRORS = (tarfile.TarError, zstandard.ZstdError, gzip.BadGzipFile, lzma.LZMAError, EOFError)


def tar_error(path: Path, e: Exception) -> ArtifactError:
    return ArtifactError(f"{path}: not a readable image tarball ({e})")


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
