"""Streaming a multipart/form-data body (how Incus exports a split image) into files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plex.errors import BackendError


def _params(header_value: str) -> dict[str, str]:
    """`a; key="v"; k2=w` -> {key: v, k2: w} (keys lower-cased, quotes stripped)."""
    out = {}
    for param in header_value.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        out[key.lower()] = value.strip('"')
    return out


def boundary(ctype: str) -> bytes:
    if value := _params(ctype).get("boundary"):
        return value.encode()
    raise BackendError(f"Incus image export: multipart without a boundary ({ctype})")


def _part_name(headers: bytes) -> str:
    """The part's file name: `filename=` (as Incus names the files), else `name=`."""
    params: dict[str, str] = {}
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        if line.lower().startswith("content-disposition:"):
            params.update(_params(line))
    name = Path(params.get("filename") or params.get("name") or "").name
    if not name or name in (".", ".."):
        raise BackendError("Incus image export: a multipart part has no file name")
    return name


def split_multipart(chunks: Iterator[bytes], boundary: bytes, dest: Path) -> list[Path]:
    """Write each part of a multipart/form-data stream to `dest/<its filename>`, holding at most
    one chunk plus a boundary's length in memory (filename parts named, as Incus sends them)."""
    delim = b"\r\n--" + boundary
    buf = b"\r\n"  # the first boundary has no CRLF before it
    out: list[Path] = []
    f: Any = None
    state = "preamble"
    stream = iter(chunks)
    done = False
    try:
        while not done:
            if state == "preamble":
                i = buf.find(delim)
                if i < 0:
                    buf = buf[-len(delim) :] + _next(stream, "before the first part")
                    continue
                buf, state = buf[i + len(delim) :], "after-delim"
            elif state == "after-delim":
                if len(buf) < 2:
                    buf += _next(stream, "after a boundary")
                    continue
                if buf.startswith(b"--"):
                    done = True
                    continue
                buf, state = buf[2:], "headers"  # CRLF
            elif state == "headers":
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(buf) > 1 << 16:
                        raise BackendError("Incus image export: multipart headers too long")
                    buf += _next(stream, "in part headers")
                    continue
                path = dest / _part_name(buf[:i])
                f = path.open("wb")
                out.append(path)
                buf, state = buf[i + 4 :], "body"
            else:  # body
                i = buf.find(delim)
                if i >= 0:
                    f.write(buf[:i])
                    f.close()
                    f = None
                    buf, state = buf[i + len(delim) :], "after-delim"
                    continue
                keep = len(delim) - 1
                if len(buf) > keep:
                    f.write(buf[:-keep])
                    buf = buf[-keep:]
                buf += _next(stream, "in a part")
    finally:
        if f is not None:
            f.close()
    return out


def _next(stream: Iterator[bytes], where: str) -> bytes:
    for chunk in stream:
        if chunk:
            return chunk
    raise BackendError(f"Incus image export: the multipart stream ended {where}")
