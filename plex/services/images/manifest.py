"""The manifest of an image artifact: what the file is, next to it as `<name>.json`.

The manifest is written last: a manifest next to an artifact means the artifact is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.errors import ArtifactError
from plex.model.plex import Role
from plex.model.record import record_json
from plex.services.images.streaming import atomic_file

FORMAT = "plex-image/1"
SUFFIX = ".tar.zst"


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
    # "container": rootfs/ inside; "vm": a qcow2 disk as rootfs.img (disk_format says which)
    virt: str = "container"
    disk_format: str = ""
    format: str = FORMAT

    @property
    def short(self) -> str:
        return self.digest[:12]

    @property
    def filename(self) -> str:
        return artifact_name(self.plex, self.role, self.digest)

    def to_json(self) -> dict[str, Any]:
        return record_json(self)

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
                virt=str(data.get("virt", "container")),
                disk_format=str(data.get("disk_format", "")),
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
    with atomic_file(path) as f:
        f.write(raw)
