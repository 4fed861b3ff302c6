"""Stale copies of evacuated nodes (plex.deploy.copies) go before anything else in a deploy.

A node re-created elsewhere with `--evacuate` left its old instance on the member that was
down. When that member returns Incus restarts the old instance (it was running), with the
node's addresses and MAC, beside the node's live copy: it is deleted first, without drain or
`kubectl delete node` (the Kubernetes Node and etcd member belong to the live copy now).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from plex.backends.incus.protocol import Incus
from plex.deploy.copies import StaleCopy


def delete_stale(
    incus: Incus, stale: Sequence[StaleCopy], report: Callable[[str, str], None]
) -> None:
    for c in stale:
        report(c.instance, f"delete: {c.reason}")
        incus.delete_instance(c.instance)
