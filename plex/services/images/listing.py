"""Listing: the plex's images, the catalog joined with what Incus holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.model.image import image_alias
from plex.model.observed import Observed
from plex.model.record import record_json
from plex.store.catalog import load_catalog


def in_use(observed: Observed) -> dict[str, list[str]]:
    """digest -> names of the plex's instances created from it."""
    used: dict[str, list[str]] = {}
    for inst in observed.instances.values():
        if inst.image:
            used.setdefault(inst.image, []).append(inst.name)
    return used


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
        return record_json(self)


def list_images(incus: Incus, plex_name: str) -> list[Row]:
    """The plex's images, catalog joined with Incus: per role, newest first."""
    catalog = load_catalog(plex_name)
    images = {i.fingerprint: i for i in incus.images()}
    observed = incus.observe(plex_name)
    used = in_use(observed)
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
