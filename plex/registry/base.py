"""What every registry renderer shares: the file type they return and the plex lookups."""

from __future__ import annotations

from dataclasses import dataclass, field

from plex.errors import UsageError
from plex.model import topology
from plex.model.plex import Plex, Upstream


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
