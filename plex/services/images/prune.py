"""Prune: old generations no alias, channel or instance uses, and the package layers left over."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.errors import UsageError
from plex.model.image import digest_alias, image_alias, package_alias
from plex.model.record import record_json
from plex.services import pristine
from plex.services.images.listing import in_use
from plex.store.catalog import Entry, load_catalog, save_catalog
from plex.store.lock import plex_lock
from plex.store.state import cache_root, state_root

PKG_LAYER_PREFIX = "plex-pkg/"


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
        return record_json(
            self,
            remove=[
                {"role": e.role, "digest": e.digest, "fingerprint": e.fingerprint}
                for e in self.remove
            ],
            kept=[
                {"role": k.entry.role, "digest": k.entry.digest, "reasons": list(k.reasons)}
                for k in self.kept
            ],
            cache_files=[str(p) for p in self.cache_files],
        )


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
    used = in_use(observed)
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
    with plex_lock(plex_name, "deploy"):
        # No pristine snapshot outlives the generation it belongs to (nor a set left partial).
        pristine.retire(incus, pristine.nodes_and_images(incus.observe(plex_name)))
    return list(plan.remove)
