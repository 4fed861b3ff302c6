"""`registry stats`: repositories and tags, the cache's size, and hits/misses where the engine
tells; and the registry node's upstream probes."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.deploy.probes import load_probes, run_probe, upstream_probes
from plex.errors import BackendError, ProbeError
from plex.model.plex import Engine, Plex
from plex.model.record import record_json
from plex.registry import distribution, zot, zot_metrics
from plex.services.registry.cache import Cache
from plex.services.registry.node import registry_node
from plex.store.identity import require_identity

# Distribution 2.8 logs one of these for every blob (and manifest) it stores from upstream.
_STORED_RE = re.compile(r"scheduler entry for (\S+)@(sha256:[0-9a-f]{64})")
# Its access log (combined format): a blob served to a client.
# containerd adds `?ns=<upstream>` to every request it sends to a mirror.
_BLOB_GET_RE = re.compile(
    r'"GET /v2/(\S+)/blobs/(sha256:[0-9a-f]{64})(?:\?\S*)? HTTP/[0-9.]+" 200 '
)


@dataclass(frozen=True)
class Repository:
    upstream: str
    name: str  # as the upstream names it: library/nginx
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Stats:
    plex: str
    engine: str
    runtime: str
    repositories: tuple[Repository, ...]
    size_bytes: int | None
    hits: int | None  # blobs served from the cache
    misses: int | None  # blobs fetched from an upstream
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return record_json(self)


def distribution_hits(log: str) -> tuple[int, int]:
    """(hits, misses) of blob requests in a Distribution 2.8 proxy's log.

    It exposes no counters worth reading (its expvar proxy metrics count every blob as a hit),
    but it logs "Adding new scheduler entry for <repo>@<digest>" for each blob it stores from
    upstream: a miss. Every other successful blob GET in the access log was a hit."""
    gets = _BLOB_GET_RE.findall(log)
    requested = {d for _, d in gets}
    misses = sum(1 for _, d in _STORED_RE.findall(log) if d in requested)
    return max(len(gets) - misses, 0), misses


def parse_tag_paths(output: str) -> dict[str, list[str]]:
    """`find` output of `.../repositories/<repo>/_manifests/tags/<tag>/current` -> tags."""
    out: dict[str, list[str]] = {}
    for line in output.splitlines():
        m = re.search(r"/repositories/(.+)/_manifests/tags/([^/]+)/current$", line.strip())
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return {k: sorted(v) for k, v in sorted(out.items())}


CATALOG_PAGE = 1000  # Distribution's default catalog.maxentries: a larger n is HTTP 400


def _catalog(cache: Cache, port: int, page_size: int = CATALOG_PAGE) -> list[str]:
    """Every repository, page by page (`last` is where the previous page ended)."""
    out: list[str] = []
    while True:
        path = f"/v2/_catalog?n={page_size}" + (f"&last={out[-1]}" if out else "")
        reply = cache.get(port, path)
        if reply.status != 200:
            raise BackendError(f"registry /v2/_catalog on port {port}: HTTP {reply.status}")
        try:
            page = [str(r) for r in json.loads(reply.body).get("repositories") or []]
        except (ValueError, AttributeError):
            raise BackendError(f"registry /v2/_catalog on port {port}: not JSON") from None
        out += page
        if len(page) < page_size:
            return out


def stats(plex: Plex, cache: Cache, runtime: str) -> Stats:
    if plex.registry.engine is Engine.ZOT:
        return _zot_stats(plex, cache, runtime)
    repos: list[Repository] = []
    hits = misses = 0
    for u in plex.registry.upstreams:
        port = distribution.port_of(plex, u.name)
        # Tags from the cache's storage: a proxy answers tags/list from the upstream.
        tags = parse_tag_paths(cache.tag_paths(u.name))
        for name in _catalog(cache, port):
            repos.append(Repository(u.name, name, tuple(tags.get(name, ()))))
        h, m = distribution_hits(cache.access_log(u.name))
        hits, misses = hits + h, misses + m
    return Stats(
        plex.name,
        plex.registry.engine.value,
        runtime,
        tuple(repos),
        cache.data_size(),
        hits,
        misses,
        "hits and misses count blob requests since the registry "
        "node (or container) started logging",
    )


def _zot_stats(plex: Plex, cache: Cache, runtime: str) -> Stats:
    port = plex.registry.port
    prefixes = {zot.destination(plex, u.name): u.name for u in plex.registry.upstreams}
    repos = []
    for name in _catalog(cache, port):
        prefix, _, rest = name.partition("/")
        reply = cache.get(port, f"/v2/{name}/tags/list")
        tags: list[str] = []
        if reply.status == 200:
            try:
                tags = sorted(json.loads(reply.body).get("tags") or [])
            except ValueError:
                tags = []
        repos.append(Repository(prefixes.get(prefix, prefix), rest or name, tuple(tags)))
    size = cache.data_size()
    metrics = cache.get(port, zot.METRICS_PATH)
    counts = zot_metrics.hits_and_misses(metrics.body) if metrics.status == 200 else None
    if counts is None:
        note = (
            f"zot answered {zot.METRICS_PATH} with HTTP {metrics.status} and no "
            f"{zot_metrics.DOWNLOADS}: hits and misses unknown"
        )
        return Stats(
            plex.name, plex.registry.engine.value, runtime, tuple(repos), size, None, None, note
        )
    note = (
        "hits and misses count manifest requests since zot started "
        f"({zot_metrics.DOWNLOADS} minus {zot_metrics.UPLOADS}, and {zot_metrics.UPLOADS}; "
        f"{counts.downloads} manifests served)"
    )
    return Stats(
        plex.name,
        plex.registry.engine.value,
        runtime,
        tuple(repos),
        size,
        counts.hits,
        counts.misses,
        note,
    )


def upstream_failures(plex: Plex, incus: Incus, root: Path) -> list[ProbeError]:
    """The registry node's `upstream` probes (deploy/probes.yaml), each tried once: one error
    per upstream it cannot resolve, reach or verify."""
    node = registry_node(plex).name
    probes = load_probes(root / "deploy" / "probes.yaml")
    failed: list[ProbeError] = []
    for probe in upstream_probes(plex, require_identity(plex), probes):
        try:
            run_probe(incus, node, node, dataclasses.replace(probe, timeout=0))
        except ProbeError as e:
            failed.append(e)
    return failed
