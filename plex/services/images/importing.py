"""Import: a verified artifact -> an Incus image pinned `<plex>/<role>@<digest12>`, cataloged."""

from __future__ import annotations

from pathlib import Path

from plex.backends.incus.protocol import ImageInfo, Incus
from plex.errors import ArtifactError
from plex.model.image import digest_alias
from plex.services.images.export import image_by_fingerprint
from plex.services.images.manifest import Manifest, open_artifact
from plex.services.images.reading import verify_artifact
from plex.services.images.streaming import Progress
from plex.store.catalog import Entry, load_catalog, save_catalog
from plex.store.lock import plex_lock


def already_imported(incus: Incus, manifest: Manifest) -> ImageInfo | None:
    """The Incus image that already holds this artifact's content, if any: the artifact itself
    (same fingerprint) or any image under its pinned alias with the same plex.digest."""
    same = image_by_fingerprint(incus, manifest.sha256)
    if same is not None:
        return same
    pinned = incus.image_by_alias(digest_alias(manifest.plex, manifest.role, manifest.digest))
    if pinned is None:
        return None
    if pinned.properties.get("plex.digest") != manifest.digest:
        raise ArtifactError(
            f"alias {digest_alias(manifest.plex, manifest.role, manifest.digest)} points at "
            f"image {pinned.fingerprint[:12]} with digest "
            f"{pinned.properties.get('plex.digest', '?')[:12]}, not {manifest.short}",
            hint="delete that alias or image first",
        )
    return pinned


def import_image(
    incus: Incus,
    artifact_path: Path,
    manifest_path: Path | None = None,
    *,
    progress: Progress | None = None,
) -> Manifest:
    """Verify an artifact against its manifest, import it, pin it as `<plex>/<role>@<digest12>`
    and record it in the catalog. The moving alias is NOT touched: deploy keeps using what it
    used until the image is promoted. Importing what is already there changes nothing."""
    manifest = open_artifact(artifact_path, manifest_path)
    verify_artifact(artifact_path, manifest, progress)
    with plex_lock(manifest.plex, "bake"):  # the catalog has one writer at a time
        have = already_imported(incus, manifest)
        if have is None:
            fingerprint = incus.import_image(
                artifact_path,
                None,
                {
                    "plex.plex": manifest.plex,
                    "plex.role": manifest.role,
                    "plex.digest": manifest.digest,
                    "plex.package_digest": manifest.package_digest,
                    # Incus tells a VM image by its rootfs.img member; plex by this property.
                    **({"plex.virt": "vm"} if manifest.virt == "vm" else {}),
                },
            )
            have = image_by_fingerprint(incus, fingerprint)
            size = have.size if have else manifest.uncompressed_size
        else:
            fingerprint, size = have.fingerprint, have.size
        incus.set_alias(
            digest_alias(manifest.plex, manifest.role, manifest.digest),
            fingerprint,
            f"imported from {artifact_path.name}",
        )
        catalog = load_catalog(manifest.plex)
        known = catalog.find(manifest.role, manifest.digest)
        if known is None or known.fingerprint != fingerprint:
            entry = Entry(
                role=manifest.role,
                digest=manifest.digest,
                package_digest=manifest.package_digest,
                fingerprint=fingerprint,
                baked_at=manifest.baked_at or manifest.exported_at,
                size=size,
                virt=manifest.virt,
                inputs=manifest.inputs,
            )
            save_catalog(catalog.record(entry))
    return manifest
