"""The registry node's files for the plex's engine (Zot or CNCF Distribution)."""

from __future__ import annotations

from plex.model.plex import Engine, Plex
from plex.registry import store
from plex.registry.base import RenderedFile
from plex.registry.credentials import Credentials
from plex.registry.distribution import distribution_files, distribution_proxies
from plex.registry.zot import zot_config, zot_files


def engine_files(plex: Plex, credentials: Credentials | None = None) -> list[RenderedFile]:
    """The registry node's files for the plex's engine; secret ones when credentials are given."""
    if plex.registry.engine is Engine.ZOT:
        return zot_files(plex, credentials)
    return distribution_files(plex, credentials) + store.distribution_files(plex)


def check_engine(plex: Plex) -> None:
    """Raise what `engine_files(plex)` raises, without rendering its files: the engine's rules
    (the upstreams it can serve, TLS, ports, the CI store) live in the configs it builds; the
    text around them (the Distribution unit template, the JSON and YAML dumps) depends on
    nothing a plex says. `plex validate` checks this way, without loading the template engine."""
    if plex.registry.engine is Engine.ZOT:
        zot_config(plex, None)
        return
    distribution_proxies(plex)
    if store.enabled(plex):
        store.check(plex)
