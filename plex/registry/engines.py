"""The registry node's files for the plex's engine (Zot or CNCF Distribution)."""

from __future__ import annotations

from plex.model.plex import Engine, Plex
from plex.registry import store
from plex.registry.base import RenderedFile
from plex.registry.credentials import Credentials
from plex.registry.distribution import distribution_files
from plex.registry.zot import zot_files


def engine_files(plex: Plex, credentials: Credentials | None = None) -> list[RenderedFile]:
    """The registry node's files for the plex's engine; secret ones when credentials are given."""
    if plex.registry.engine is Engine.ZOT:
        return zot_files(plex, credentials)
    return distribution_files(plex, credentials) + store.distribution_files(plex)
