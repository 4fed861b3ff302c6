"""Zot's cache hits and misses, from what its metrics extension really exposes. Pure.

Zot has no hit/miss counter. Its Prometheus metrics (project-zot/zot
`pkg/extensions/monitoring/extension.go`, namespace `zot`, the same names v2.1.0 to v2.1.20)
include two per-repository counters that together tell it:

- `zot_repo_downloads_total{repo}`: `ImageStore.GetImageManifest` served a manifest
  (`pkg/storage/imagestore/imagestore.go`, counted only when it succeeds);
- `zot_repo_uploads_total{repo}`: `ImageStore.PutImageManifest` stored a manifest. On a pull
  through cache nobody pushes: on-demand sync stores what it fetched from the upstream through
  that same call (`pkg/extensions/sync/destination.go`).

A pull of a manifest zot does not hold fails the first `GetImageManifest` (not counted), syncs
it (one upload per manifest stored, an index and its platform manifests each), then serves it
(one download). So per repository: misses = manifests fetched from the upstream (uploads), hits
= manifests served without fetching (downloads - uploads, at least 0). Counters start at 0 with
each zot process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOWNLOADS = "zot_repo_downloads_total"
UPLOADS = "zot_repo_uploads_total"
SOURCE = "project-zot/zot pkg/extensions/monitoring/extension.go (v2.1.0..v2.1.20)"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def counters(text: str, name: str) -> dict[str, float]:
    """Prometheus text exposition: `name{repo="x",...} 3` summed per `repo` label."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or m.group(1) != name:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        if "repo" not in labels:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[labels["repo"]] = out.get(labels["repo"], 0.0) + value
    return out


@dataclass(frozen=True)
class CacheCounts:
    hits: int
    misses: int
    downloads: int  # manifests served, for the note


def hits_and_misses(text: str) -> CacheCounts | None:
    """Hits and misses of manifest requests, or None when the text has neither counter (the
    metrics extension is off, or this is not zot's full binary)."""
    if DOWNLOADS not in text and UPLOADS not in text:
        return None
    downloads = counters(text, DOWNLOADS)
    uploads = counters(text, UPLOADS)
    hits = misses = 0
    for repo in set(downloads) | set(uploads):
        d, u = int(downloads.get(repo, 0)), int(uploads.get(repo, 0))
        misses += u
        hits += max(d - u, 0)
    return CacheCounts(hits, misses, int(sum(downloads.values())))
