"""`registry warm`: pull an image list through the cache from where the engine runs, so no
containerd is needed. Blobs are read and thrown away: only the cache keeps them."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plex.errors import UsageError
from plex.model.plex import Engine, Plex
from plex.model.record import record_json
from plex.registry import distribution, zot
from plex.services.registry.cache import Cache
from plex.store import releases

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
PLATFORM = ("linux", "amd64")
DEFAULT_REGISTRY = "docker.io"
# distribution-spec repository names: path components joined by single slashes.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


@dataclass(frozen=True)
class Reference:
    """An image reference split the way registries see it."""

    registry: str  # docker.io, ghcr.io, lab.internal:5000
    repository: str  # library/nginx
    reference: str  # a tag or a sha256 digest

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_reference(text: str) -> Reference:
    """docker-style reference: `nginx` -> docker.io/library/nginx:latest."""
    ref = text.strip()
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    tag = ""
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        registry = "docker.io"
        if "/" not in path:
            path = f"library/{path}"
    if not _REPOSITORY_RE.fullmatch(path):
        raise UsageError(f"'{text}' is not an image reference")
    return Reference(registry, path, digest or tag or "latest")


def read_image_list(text: str) -> list[str]:
    """One image per line; blank lines and `#` comments are skipped."""
    return [s for line in text.splitlines() if (s := line.split("#", 1)[0].strip())]


def default_image_list(plex: Plex) -> list[str]:
    """The RKE2 release's `rke2-images.linux-amd64.txt`, checksum-verified like the tarball."""
    rel = releases.rke2_release(plex.kubernetes)
    path = rel.asset(releases.RKE2_IMAGE_LIST).fetch().path
    return read_image_list(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Warmed:
    image: str
    ok: bool
    digest: str | None = None  # the platform manifest's digest
    blobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return record_json(self)


def cache_path(plex: Plex, ref: Reference) -> tuple[int, str]:
    """(port, `/v2/<name>`) where the cache serves `ref`'s repository; UsageError when its
    registry is not an upstream of the plex."""
    names = [u.name for u in plex.registry.upstreams]
    if ref.registry not in names:
        raise UsageError(
            f"{ref.registry} is not an upstream of plex '{plex.name}'",
            hint="upstreams: " + ", ".join(names),
        )
    if plex.registry.engine is Engine.ZOT:
        return plex.registry.port, f"/v2/{zot.destination(plex, ref.registry)}/{ref.repository}"
    return distribution.port_of(plex, ref.registry), f"/v2/{ref.repository}"


def _platform_manifest(index: Mapping[str, Any]) -> str | None:
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        if (p.get("os"), p.get("architecture")) == PLATFORM:
            return str(m["digest"])
    return None


def warm_one(plex: Plex, cache: Cache, image: str) -> Warmed:
    start = time.monotonic()

    def failed(why: str) -> Warmed:
        return Warmed(image, False, seconds=time.monotonic() - start, error=why)

    try:
        ref = parse_reference(image)
        port, base = cache_path(plex, ref)
    except UsageError as e:
        return failed(e.message)
    accept = ", ".join(MANIFEST_TYPES)
    reply = cache.get(port, f"{base}/manifests/{ref.reference}", accept)
    if reply.status != 200:
        return failed(f"manifest {ref.reference}: HTTP {reply.status or 'no answer'}")
    try:
        doc = json.loads(reply.body)
        if doc.get("mediaType", reply.content_type.split(";")[0]) in INDEX_TYPES:
            digest = _platform_manifest(doc)
            if digest is None:
                return failed("no linux/amd64 manifest in the index")
            reply = cache.get(port, f"{base}/manifests/{digest}", accept)
            if reply.status != 200:
                return failed(f"manifest {digest}: HTTP {reply.status or 'no answer'}")
            doc = json.loads(reply.body)
        blobs = [doc["config"]["digest"], *(layer["digest"] for layer in doc.get("layers", []))]
    except (ValueError, KeyError, TypeError) as e:
        return failed(f"unreadable manifest: {e}")
    digest = "sha256:" + hashlib.sha256(reply.body.encode()).hexdigest()
    total = 0
    for b in blobs:
        got = cache.drain(port, f"{base}/blobs/{b}")
        if got.status != 200:
            return failed(f"blob {b[:19]}: HTTP {got.status or 'no answer'}")
        total += got.size
    return Warmed(image, True, digest, len(blobs), total, time.monotonic() - start)


def warm(
    plex: Plex, cache: Cache, images: Iterable[str], report: Callable[[Warmed], None] | None = None
) -> list[Warmed]:
    """Pull every image through the cache (one at a time: the upstream is the bottleneck)."""
    out = []
    for image in images:
        w = warm_one(plex, cache, image)
        if report is not None:
            report(w)
        out.append(w)
    return out


def failed_images(results: Sequence[Warmed]) -> list[Warmed]:
    return [w for w in results if not w.ok]
