"""The plex registry: a pull-through cache on the registry node, and the node-side mirrors.

Pure rendering only (no daemon, no subprocess): `zot` renders Zot's config.json (one instance
fronts every upstream, each under its own path prefix), `distribution` renders one Debian
docker-registry proxy per upstream (one port each), `mirrors` renders what the Kubernetes nodes
need to pull through it (RKE2 registries.yaml, containerd hosts.toml), and `credentials` loads
the upstream logins without ever printing a password.

Every renderer returns plain data; `engine_files` / `mirrors.node_files` wrap it into
`RenderedFile`s carrying the target path, owner and mode, and whether the content is secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plex.errors import UsageError
from plex.model import topology
from plex.model.plex import Engine, Plex, Upstream
from plex.registry.credentials import Credentials


@dataclass(frozen=True)
class RenderedFile:
    """A file to place on a node. Secret content never shows in repr/str."""

    path: str
    content: str = field(repr=False)
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False

    def __repr__(self) -> str:
        body = "<secret>" if self.secret else f"{len(self.content)} chars"
        return f"RenderedFile({self.path!r}, mode={self.mode:04o}, {body})"

    __str__ = __repr__


def registry_address(plex: Plex) -> str | None:
    """The address nodes reach the registry at (no DNS involved); None without a registry node."""
    node = topology.registry_node(plex)
    return node.address if node is not None else None


def upstream(plex: Plex, name: str) -> Upstream:
    for u in plex.registry.upstreams:
        if u.name == name:
            return u
    raise UsageError(
        f"plex '{plex.name}' has no registry upstream '{name}'",
        hint="upstreams: " + ", ".join(u.name for u in plex.registry.upstreams),
    )


def engine_files(plex: Plex, credentials: Credentials | None = None) -> list[RenderedFile]:
    """The registry node's files for the plex's engine; secret ones when credentials are given."""
    # Imported here: both engine modules import RenderedFile from this package.
    if plex.registry.engine is Engine.ZOT:
        from plex.registry.zot import zot_files

        return zot_files(plex, credentials)
    from plex.registry.distribution import distribution_files

    return distribution_files(plex, credentials)


__all__ = ["RenderedFile", "engine_files", "registry_address", "upstream"]
