"""Where the registry runs: its node, its Docker container names, the nodes' mirror endpoints."""

from __future__ import annotations

import re

from plex.errors import UsageError
from plex.model import topology
from plex.model.plex import Plex
from plex.registry.mirrors import mirror_url


def registry_node(plex: Plex) -> topology.Node:
    node = topology.registry_node(plex)
    if node is None:
        raise UsageError(
            f"plex '{plex.name}' has no registry node", hint="add roles.registry to the plex file"
        )
    return node


def endpoints(plex: Plex) -> tuple[str, ...]:
    return tuple(mirror_url(plex, u.name) for u in plex.registry.upstreams)


def container_name(plex: Plex, upstream_name: str | None = None) -> str:
    """`<plex>-registry` (zot), `<plex>-registry-<upstream>` (distribution, `:` -> `-`)."""
    base = f"{plex.name}-registry"
    if upstream_name is None:
        return base
    return f"{base}-{re.sub(r'[^A-Za-z0-9_.-]', '-', upstream_name)}"
