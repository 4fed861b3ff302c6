"""The plex as a genders database (`plex inventory -o genders`), as the seeds' mkgenders wrote it.

Pure. One line per node: its name, whitespace, then comma-separated attributes. The rules are
genders' own (TUTORIAL "Genders Format" and libgenders' parser, genders 1.22 in Debian 12; the
tests check the output with the real `nodeattr -k`):
- a node line is `nodename attr[=value],attr[=value],...`; no spaces inside the attribute list,
  no continuation lines, `#` starts a comment;
- `,` and `=` may not appear in attribute names or values (and whitespace may not either);
- `%n` in a value is replaced by the node name, so a literal `%` is never written;
- no node may carry the same attribute twice.
"""

from __future__ import annotations

import re

from plex.model import topology
from plex.model.plex import Plex

# What genders accepts in a name or value, minus '%' (substitution) and '#' (comment).
_SAFE = re.compile(r"^[^\s,=%#]+$")


def _attr(name: str, value: str | None = None) -> str:
    if not _SAFE.fullmatch(name):
        raise ValueError(f"genders attribute name {name!r} is not allowed")
    if value is None:
        return name
    if not _SAFE.fullmatch(value):
        raise ValueError(f"genders value {value!r} of {name} is not allowed")
    return f"{name}={value}"


def node_attributes(plex: Plex, node: topology.Node) -> list[str]:
    """The attributes of one node, in a stable order (bare role groups first, then values)."""
    attrs = [_attr("plex", plex.name), _attr(node.role.value)]
    if node.role.is_kube:
        attrs.append(_attr("kube"))
    if node.is_master:
        attrs.append(_attr("master"))
    attrs += [
        _attr("role", node.role.value),
        _attr("ip", node.address),
        _attr("fqdn", node.fqdn(plex.network.domain)),
        _attr("virt", node.virt.value),
        _attr("base", node.base),
        _attr("project", plex.incus.project),
    ]
    if node.member:
        attrs.append(_attr("member", node.member))
    if plex.network.vip:
        attrs.append(_attr("vip", plex.network.vip))
    return attrs


def genders(plex: Plex) -> str:
    """The whole genders file of the plex."""
    nodes = topology.nodes(plex)
    width = max(len(n.name) for n in nodes) + 2
    lines = [f"# genders database of plex {plex.name}, written by plex (plex inventory -o genders)"]
    for n in nodes:
        lines.append(f"{n.name.ljust(width)}{','.join(node_attributes(plex, n))}")
    return "\n".join(lines) + "\n"
