"""Baked images as the layers above name them: `ImageRef` and the Incus alias names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plex.model.enums import Role
from plex.model.record import record_json


@dataclass(frozen=True)
class ImageRef:
    """One baked image as deploy uses it: the recipe digest and the Incus image holding it."""

    role: Role
    digest: str  # recipe digest: what the node runs (user.plex.image)
    fingerprint: str  # Incus image fingerprint: what the instance is created from
    alias: str  # `<plex>/<role>`, for humans

    def to_json(self) -> dict[str, Any]:
        return record_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRef:
        return cls(
            role=Role(data["role"]),
            digest=str(data["digest"]),
            fingerprint=str(data["fingerprint"]),
            alias=str(data.get("alias", "")),
        )


def image_alias(plex: str, role: Role | str) -> str:
    """The moving alias deploy uses: `<plex>/<role>`."""
    return f"{plex}/{role}"


def digest_alias(plex: str, role: Role | str, digest: str) -> str:
    """The pinned alias of one image: `<plex>/<role>@<digest12>`."""
    return f"{plex}/{role}@{digest[:12]}"


def package_alias(digest: str) -> str:
    return f"plex-pkg/{digest[:12]}"
