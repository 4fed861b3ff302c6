"""Split (VM) image exports: Incus's multipart body is split into its files as a stream."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from urllib3 import encode_multipart_formdata

from plex.backends.incus.multipart import split_multipart
from plex.errors import BackendError


def body(parts: dict[str, bytes]) -> tuple[bytes, bytes]:
    """A multipart/form-data body as an HTTP library writes it (urllib3, which requests uses)."""
    # As Incus: the form field is "metadata"/"rootfs", the file name the stored file's.
    fields = {
        name.split(".")[0]: (name, data, "application/octet-stream") for name, data in parts.items()
    }
    data, ctype = encode_multipart_formdata(fields)
    return data, ctype.split("boundary=", 1)[1].encode()


@pytest.mark.parametrize(
    ("chunk", "size"), [(1, 3000), (7, 100_000), (4096, 3 << 20), (1 << 20, 3 << 20)]
)
def test_parts_are_written_to_their_files(tmp_path: Path, chunk: int, size: int) -> None:
    meta = b"metadata tarball"
    qcow2 = os.urandom(size) + b"\r\n--" + b"x" * 10  # a boundary-like run inside the data
    data, boundary = body({"metadata": meta, "rootfs.img": qcow2})
    chunks = iter([data[i : i + chunk] for i in range(0, len(data), chunk)])
    files = split_multipart(chunks, boundary, tmp_path)
    assert [p.name for p in files] == ["metadata", "rootfs.img"]
    assert (tmp_path / "metadata").read_bytes() == meta
    got = (tmp_path / "rootfs.img").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(qcow2).hexdigest()


def test_a_truncated_stream_is_an_error(tmp_path: Path) -> None:
    data, boundary = body({"metadata": b"m", "rootfs.img": b"q" * 10_000})
    with pytest.raises(BackendError, match="ended in a part"):
        split_multipart(iter([data[:5000]]), boundary, tmp_path)


def test_a_part_without_a_name_is_refused(tmp_path: Path) -> None:
    raw = b"--B\r\nContent-Type: x\r\n\r\ndata\r\n--B--\r\n"
    with pytest.raises(BackendError, match="no file name"):
        split_multipart(iter([raw]), b"B", tmp_path)
