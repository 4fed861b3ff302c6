"""The catalog: every image baked for a plex, by digest, in generations. JSON, never pickle.

`<state>/<plex>/catalog.json`. Incus holds the images; the catalog remembers what they are
(provenance, sizes, times), their order (for rollback and prune) and the channels (`stable`).
Written atomically, so a killed bake leaves the previous catalog intact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from plex.errors import PlexError
from plex.model.image import ImageRef, image_alias
from plex.model.plex import Role
from plex.store.state import plex_dir, write_private

CATALOG_VERSION = 1


@dataclass(frozen=True)
class Entry:
    role: str
    digest: str
    package_digest: str
    fingerprint: str
    baked_at: float
    seconds: float = 0.0
    size: int = 0
    virt: str = "container"
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.digest[:12]


@dataclass(frozen=True)
class Catalog:
    plex: str
    entries: tuple[Entry, ...] = ()
    channels: dict[str, dict[str, str]] = field(default_factory=dict)  # channel -> role -> digest

    def generations(self, role: Role | str) -> list[Entry]:
        """The role's images, newest first."""
        r = str(role)
        return sorted((e for e in self.entries if e.role == r), key=lambda e: -e.baked_at)

    def find(self, role: Role | str, digest: str) -> Entry | None:
        for e in self.entries:
            if e.role == str(role) and e.digest == digest:
                return e
        return None

    def latest(self, role: Role | str) -> Entry | None:
        gens = self.generations(role)
        return gens[0] if gens else None

    def record(self, entry: Entry) -> Catalog:
        """Add (or refresh) an entry; a re-bake of a known digest moves it to the front."""
        rest = tuple(
            e for e in self.entries if not (e.role == entry.role and e.digest == entry.digest)
        )
        return replace(self, entries=(*rest, entry))

    def remove(self, role: str, digest: str) -> Catalog:
        return replace(
            self,
            entries=tuple(e for e in self.entries if not (e.role == role and e.digest == digest)),
        )

    def promote(self, channel: str, role: str, digest: str) -> Catalog:
        chans = {k: dict(v) for k, v in self.channels.items()}
        chans.setdefault(channel, {})[role] = digest
        return replace(self, channels=chans)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CATALOG_VERSION,
            "plex": self.plex,
            "entries": [asdict(e) for e in self.entries],
            "channels": self.channels,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        return cls(
            plex=data["plex"],
            entries=tuple(Entry(**e) for e in data.get("entries", [])),
            channels={k: dict(v) for k, v in data.get("channels", {}).items()},
        )


def catalog_path(plex_name: str) -> Path:
    return plex_dir(plex_name) / "catalog.json"


def load_catalog(plex_name: str) -> Catalog:
    path = catalog_path(plex_name)
    if not path.exists():
        return Catalog(plex_name)
    try:
        return Catalog.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise PlexError(
            f"{path}: catalog is damaged ({e})",
            hint="move it away; the next bake rebuilds it from Incus",
        ) from None


def save_catalog(catalog: Catalog) -> None:
    write_private(
        catalog_path(catalog.plex), json.dumps(catalog.to_json(), indent=2, sort_keys=True) + "\n"
    )


def current_images(plex: Any, aliases: Mapping[str, str]) -> dict[Role, ImageRef]:
    """The image each role deploys: what its moving alias `<plex>/<role>` points at.

    `aliases` (alias -> fingerprint) comes from an Observed snapshot: the one image source of
    plan, deploy, status, rollback and registry up (never "the newest catalog entry", which a
    rollback leaves behind). Roles with no image are left out: the planner reports them as
    unbaked.
    """
    catalog = load_catalog(plex.name)
    out: dict[Role, ImageRef] = {}
    for role, _rc in plex.roles.items():
        alias = image_alias(plex.name, role)
        fp = aliases.get(alias)
        entry = next((e for e in catalog.generations(role) if e.fingerprint == fp), None)
        if entry is not None:
            out[role] = ImageRef(
                role=role, digest=entry.digest, fingerprint=entry.fingerprint, alias=alias
            )
    return out
