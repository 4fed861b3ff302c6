"""Reading artifacts: their members, their metadata.yaml, and verification against a manifest."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from plex.errors import ArtifactError
from plex.services.images.manifest import Manifest
from plex.services.images.streaming import (
    READ_ERRORS,
    ZSTD_MAGIC,
    Progress,
    norm,
    open_tar_stream,
    sha256_file,
    tar_error,
)


def iter_artifact_members(path: Path, max_size: int = 1 << 20) -> Iterator[tuple[str, bytes]]:
    """Stream an artifact (or any image tarball) and yield (name, content) of every regular file
    of at most `max_size` bytes; bigger files are skipped unread. For scanning images (keys)."""
    try:
        with open_tar_stream(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                if m.isreg() and m.size <= max_size:
                    got = tar.extractfile(m)
                    yield norm(m.name), got.read() if got else b""
    except READ_ERRORS as e:
        raise tar_error(path, e) from None


def read_metadata(path: Path) -> dict[str, Any] | None:
    """metadata.yaml of an image tarball, reading only up to it (it precedes rootfs/)."""
    try:
        with open_tar_stream(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                name = norm(m.name)
                if name == "metadata.yaml" and m.isreg():
                    got = tar.extractfile(m)
                    data = yaml.safe_load(got.read() if got else b"")
                    return data if isinstance(data, dict) else None
                if name.startswith("rootfs/"):
                    return None
    except (*READ_ERRORS, yaml.YAMLError) as e:
        raise tar_error(path, e) from None
    return None


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
