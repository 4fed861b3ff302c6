"""Image artifacts: a baked image as one portable file, its manifest, import, prune and listing.

An artifact is a UNIFIED Incus image tarball (metadata.yaml + templates/ + rootfs/) compressed
with multi-threaded zstandard, `<plex>-<role>-<digest12>.tar.zst`, next to its manifest
`<plex>-<role>-<digest12>.json` (sha256 and size of the file, the recipe digest, provenance and
the Debian packages inside). Incus stores plex images uncompressed (publish is faster that way),
so compression happens here, once, on export, on every core.

Everything streams: no image is ever held in memory, and every file appears under its final name
only when complete (temporary file, then rename).

Modules, one per kind of data: `manifest` (the .json), `streaming` (atomic files, counting and
hashing streams), `packing` (Incus export -> artifact), `reading` (members, metadata,
verification), `export`, `importing`, `prune`, `listing`. This package re-exports their public
names so callers can keep `from plex.services import images`.
"""

from plex.services.images.export import export_image, find_entry, image_by_fingerprint
from plex.services.images.importing import already_imported, import_image
from plex.services.images.listing import Row, list_images
from plex.services.images.manifest import (
    FORMAT,
    SUFFIX,
    Manifest,
    artifact_name,
    load_manifest,
    manifest_path_for,
    open_artifact,
    write_manifest,
)
from plex.services.images.packing import (
    DEFAULT_LEVEL,
    Packed,
    pack_split,
    pack_unified,
    parse_dpkg_status,
)
from plex.services.images.prune import PrunePlan, apply_prune, plan_prune, prune
from plex.services.images.reading import iter_artifact_members, read_metadata, verify_artifact
from plex.services.images.streaming import ZSTD_MAGIC, Progress, sha256_file

__all__ = [
    "DEFAULT_LEVEL",
    "FORMAT",
    "SUFFIX",
    "ZSTD_MAGIC",
    "Manifest",
    "Packed",
    "Progress",
    "PrunePlan",
    "Row",
    "already_imported",
    "apply_prune",
    "artifact_name",
    "export_image",
    "find_entry",
    "image_by_fingerprint",
    "import_image",
    "iter_artifact_members",
    "list_images",
    "load_manifest",
    "manifest_path_for",
    "open_artifact",
    "pack_split",
    "pack_unified",
    "parse_dpkg_status",
    "plan_prune",
    "prune",
    "read_metadata",
    "sha256_file",
    "verify_artifact",
    "write_manifest",
]
