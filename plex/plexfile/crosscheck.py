"""Plexes checked against each other: what two plexes sharing one network must not share. Pure.

Two plexes are on one network when they name the same Incus remote and network (bridge). On one
network they must not have overlapping node CIDRs, the same VIP, the same VRRP router id, or a
node name in common: Incus registers every instance's name in the bridge's DNS, per network and
not per project, so a second `demo-server1` in another project fails to start with "Instance DNS
name ... already used on network".

`cross_check` works on parsed files (`plex validate a.yaml b.yaml`); `live_collisions` on what
the Incus network holds now (`plex deploy`, before anything is created).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from plex.errors import ConfigError
from plex.model import topology
from plex.model.plex import Plex


@dataclass(frozen=True)
class PlexFile:
    """A parsed plex and the line of every YAML path in its file (for error messages)."""

    plex: Plex
    lines: dict[tuple[str | int, ...], int]

    @property
    def file(self) -> str:
        return self.plex.source

    def line(self, *path: str) -> int | None:
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def where(self, *path: str) -> str:
        line = self.line(*path)
        return f"{self.file}:{line}" if line else self.file


def network_key(plex: Plex) -> tuple[str, str]:
    return plex.incus.remote, plex.incus.network


def _pair(a: PlexFile, b: PlexFile) -> list[ConfigError]:
    """Problems of `b` against `a` (an earlier file on the same network), reported on `b`."""
    out: list[ConfigError] = []
    pa, pb = a.plex, b.plex
    on = f"on network {pb.incus.network}"

    def err(path: tuple[str, ...], problem: str) -> None:
        out.append(ConfigError(b.file, ".".join(path), problem, b.line(*path)))

    na = ipaddress.ip_network(pa.network.cidr, strict=False)
    nb = ipaddress.ip_network(pb.network.cidr, strict=False)
    if na.overlaps(nb):
        err(
            ("network", "cidr"),
            f"{nb} overlaps {na} of plex '{pa.name}' ({a.where('network', 'cidr')}) {on}",
        )
    if pa.network.vip and pa.network.vip == pb.network.vip:
        err(
            ("network", "vip"),
            f"VIP {pb.network.vip} is also the VIP of plex '{pa.name}' "
            f"({a.where('network', 'vip')}) {on}",
        )
    lbs = (pa.roles.lb and pa.roles.lb.count) and (pb.roles.lb and pb.roles.lb.count)
    if lbs and pa.network.virtual_router_id == pb.network.virtual_router_id:
        err(
            ("network", "virtual_router_id"),
            f"VRRP router id {pb.network.virtual_router_id} is also used by plex '{pa.name}' "
            f"({a.where('network', 'virtual_router_id')}) {on}",
        )
    names_a = {n.name for n in topology.nodes(pa)}
    common = [n.name for n in topology.nodes(pb) if n.name in names_a]
    if common:
        shown = ", ".join(common[:3]) + (f" and {len(common) - 3} more" if len(common) > 3 else "")
        err(
            ("name",),
            f"node names {shown} are also nodes of plex '{pa.name}' "
            f"({a.where('name')}) {on}: Incus DNS names are per network",
        )
    return out


def cross_check(files: Sequence[PlexFile]) -> list[ConfigError]:
    """Every pair of plexes on one network; each problem is reported once, on the later file."""
    out: list[ConfigError] = []
    for i, b in enumerate(files):
        for a in files[:i]:
            if network_key(a.plex) == network_key(b.plex) and a.file != b.file:
                out.extend(_pair(a, b))
    return out


# --------------------------------------------------------------------------------------------
# The live network


@dataclass(frozen=True)
class Neighbour:
    """An instance on the plex's network, in any project (from the Incus backend)."""

    project: str
    name: str
    addresses: tuple[str, ...]  # configured (NIC ipv4.address) and live IPv4 addresses
    plex: str | None  # user.plex.plex, when some plex owns it

    @property
    def holder(self) -> str:
        """Its project and owner, as an error names them."""
        owner = f"plex '{self.plex}'" if self.plex else "not plex-owned"
        return f"project '{self.project}' ({owner})"


def live_collisions(plex: Plex, neighbours: Sequence[Neighbour]) -> list[str]:
    """What on the live network would collide with this plex's nodes: one sentence per other
    holder (a project, and the plex owning its instances), naming each taken name and address.

    The plex's own nodes (same project, owned by this plex) are not collisions: they are what a
    deploy replaces. Grouped because the usual cause is a whole plex deployed from another
    project (or left by a killed run): one line per node name and address made an error of
    thousands of characters saying the same thing 17 times."""
    nodes = topology.nodes(plex)
    by_name = {n.name: n for n in nodes}
    by_addr = {n.address: n.name for n in nodes}
    if plex.network.vip:
        by_addr[plex.network.vip] = "the VIP"
    names: dict[str, list[str]] = {}
    addrs: dict[str, dict[str, str]] = {}  # holder -> address -> how the error says it
    for nb in neighbours:
        if nb.project == plex.incus.project and nb.plex == plex.name:
            continue
        holder = nb.holder
        if nb.name in by_name and nb.project != plex.incus.project:
            names.setdefault(holder, []).append(nb.name)
        for addr in nb.addresses:
            if addr in by_addr:
                ours = by_addr[addr]
                held = f"{addr} ({ours})" if nb.name == ours else f"{addr} ({ours}) by {nb.name}"
                addrs.setdefault(holder, {})[addr] = held
    out: list[str] = []
    for holder in dict.fromkeys([*names, *addrs]):
        parts = []
        if holder in names:
            taken = sorted(names[holder])
            parts.append(
                f"node name{'s' if len(taken) > 1 else ''} {', '.join(taken)} taken "
                "(Incus DNS names are per network)"
            )
        if holder in addrs:
            used = [addrs[holder][a] for a in sorted(addrs[holder], key=ipaddress.ip_address)]
            parts.append(f"address{'es' if len(used) > 1 else ''} {', '.join(used)} in use")
        out.append(f"{holder} on network {plex.incus.network}: " + "; ".join(parts))
    return out
