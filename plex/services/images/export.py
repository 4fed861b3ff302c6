"""Export: a catalog entry's Incus image -> `<plex>-<role>-<digest12>.tar.zst` + manifest."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from plex.backends.incus.protocol import ImageInfo, Incus
from plex.errors import ArtifactError, UsageError
from plex.model.plex import Role
from plex.services.images.manifest import Manifest, artifact_name, manifest_path_for, write_manifest
from plex.services.images.packing import DEFAULT_LEVEL, pack_split, pack_unified
from plex.services.images.streaming import Progress
from plex.store.catalog import Catalog, Entry, load_catalog


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


def image_by_fingerprint(incus: Incus, fingerprint: str) -> ImageInfo | None:
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
    info = image_by_fingerprint(incus, entry.fingerprint)
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
        virt=packed.virt,
        disk_format="qcow2" if packed.virt == "vm" else "",
    )
    # The manifest last: a manifest next to an artifact means the artifact is complete.
    write_manifest(manifest, manifest_path_for(out))
    return manifest
