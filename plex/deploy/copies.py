"""The copies of a node in Incus, and where a node lives when its member is down. Pure.

A node is normally one instance named after it on its planned member. When that member goes
down Incus refuses to stop, delete, rename or move the node's instance, and its name stays
taken in the project until the member comes back (or an admin removes the member). So
`plex deploy --evacuate` re-creates such a node on an online member under another *instance*
name, `<node>-<member>`, while the node keeps its identity: node name (Kubernetes Node, etcd
member, /etc/hosts), hostname, addresses, MAC, SSH host keys, node password and join token.

A node can therefore have several copies, told apart here:
- live: the reachable copy that serves the node (the newest generation: an evacuation and
  every replacement bump it);
- lost: copies on a member that is down (Incus lists them without their config, as `Error`);
- stale: reachable copies superseded by the live one -- a lost copy whose member came back.
  Incus restarts it (same addresses, same MAC as the live copy), so a deploy deletes stale
  copies before anything else, and `plex status` lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plex.errors import UsageError
from plex.model import owner, topology
from plex.model.observed import Observed, ObservedInstance
from plex.model.plex import Plex
from plex.model.record import record_json
from plex.model.topology import Node

# Incus instance names are hostnames: one DNS label.
MAX_NAME = 63


def instance_name(node: str, member: str | None, planned: str | None) -> str:
    """The Incus instance name of `node` placed on `member`: its own name on its planned
    member, `<node>-<member>` elsewhere (the own name may be held by a lost copy)."""
    if member is None or member == planned:
        return node
    name = f"{node}-{member}"
    if len(name) > MAX_NAME:
        raise UsageError(
            f"cannot evacuate {node} to {member}: instance name {name!r} is longer than "
            f"{MAX_NAME} characters",
            hint="use shorter plex or member names",
        )
    return name


def generation(inst: ObservedInstance) -> int:
    try:
        return int(inst.config.get(owner.GENERATION, "0"))
    except ValueError:
        return 0


def _created(inst: ObservedInstance) -> int:
    try:
        return int(inst.config.get(owner.CREATED, "0"))
    except ValueError:
        return 0


@dataclass(frozen=True)
class NodeCopies:
    node: str
    live: ObservedInstance | None = None
    lost: tuple[ObservedInstance, ...] = ()
    stale: tuple[ObservedInstance, ...] = ()

    @property
    def current(self) -> ObservedInstance | None:
        """What the planner compares with the plex file: the live copy, else a lost one."""
        return self.live or (self.lost[0] if self.lost else None)


@dataclass(frozen=True)
class StaleCopy:
    """A reachable copy of a node superseded by its live copy: deleted before anything else."""

    instance: str
    node: str
    member: str | None
    live: str  # the instance serving the node

    @property
    def reason(self) -> str:
        return f"stale copy of {self.node} (served by {self.live})"

    def to_json(self) -> dict[str, Any]:
        return record_json(self)


def stale_copies(copies: Mapping[str, NodeCopies]) -> tuple[StaleCopy, ...]:
    return tuple(
        StaleCopy(s.name, c.node, s.location, c.live.name)
        for c in copies.values()
        if c.live is not None
        for s in c.stale
    )


def node_of(inst: ObservedInstance, nodes: Sequence[str]) -> str:
    """The node `inst` is a copy of: its `user.plex.node`, or for a lost copy (Incus shows no
    config while its member is down) the node its name is, or starts with `<node>-`."""
    if owner.NODE in inst.config:
        return inst.node
    match = [n for n in nodes if inst.name == n or inst.name.startswith(f"{n}-")]
    return max(match, key=len) if match else inst.name


def node_copies(observed: Observed, nodes: Sequence[str]) -> dict[str, NodeCopies]:
    """Every node (and orphan) with instances in `observed`, by node name."""
    grouped: dict[str, list[ObservedInstance]] = {}
    for inst in observed.instances.values():
        grouped.setdefault(node_of(inst, nodes), []).append(inst)
    out = {}
    for node, insts in grouped.items():
        lost = tuple(i for i in insts if observed.unreachable(i))
        # The copy plex made last serves the node (a lost copy's generation is unknown while
        # its member is down, so creation time decides, then generation).
        reachable = sorted(
            (i for i in insts if not observed.unreachable(i)),
            key=lambda i: (_created(i), generation(i), i.name == node),
            reverse=True,
        )
        out[node] = NodeCopies(
            node,
            live=reachable[0] if reachable else None,
            lost=lost,
            stale=tuple(reachable[1:]),
        )
    return out


def live_instances(observed: Observed, nodes: Sequence[str]) -> dict[str, str]:
    """node -> the instance serving it, for nodes with a reachable copy."""
    return {n: c.live.name for n, c in node_copies(observed, nodes).items() if c.live}


def evacuation_member(
    node: Node,
    candidates: Sequence[str],
    placed: Mapping[str, Node],
    targets: Mapping[str, str | None],
) -> str | None:
    """The online member to re-place `node` on: the one with the fewest nodes of its role
    (servers spread out for etcd, lbs for the VIP), then the fewest nodes, then the order of
    `candidates` (the role's placement, then the plex's members)."""
    if not candidates:
        return None

    def load(member: str) -> tuple[int, int, int]:
        here = [n for n, t in targets.items() if t == member and n != node.name]
        same = sum(1 for n in here if n in placed and placed[n].role is node.role)
        return same, len(here), candidates.index(member)

    return min(candidates, key=load)


@dataclass(frozen=True)
class Placement:
    """Where a node's instance goes (or stays) and under which instance name."""

    member: str | None
    instance: str
    evacuated_from: str | None = None  # set when re-placed off its planned member now
    why: str = ""  # why the planned member is not used (its state)


def placements(
    plex: Plex,
    nodes: Sequence[Node],
    observed: Observed,
    copies: Mapping[str, NodeCopies],
    evacuate: bool,
) -> dict[str, Placement]:
    """Each node's member: its planned one when that is online; else where its live copy runs
    (an evacuated node stays until its member is back); else, with `evacuate`, the least
    loaded online member. Without `evacuate` a node of a down member keeps its planned one
    (the planner leaves it alone)."""
    online = observed.online_members
    out: dict[str, Placement] = {}
    moving: list[Node] = []
    for n in nodes:
        planned = n.member
        live = copies[n.name].live if n.name in copies else None
        if not observed.members or planned is None or planned in online:
            out[n.name] = Placement(planned, n.name)
        elif live is not None and live.location in online:
            why = f"member {planned} is {observed.members.get(planned) or 'unknown'}"
            out[n.name] = Placement(live.location, live.name, why=why)
        elif evacuate:
            moving.append(n)
        else:
            out[n.name] = Placement(planned, n.name)
    targets: dict[str, str | None] = {name: p.member for name, p in out.items()}
    by_name = {n.name: n for n in nodes}
    for n in moving:
        preferred = [*topology.role_members(plex, n.role), *plex.incus.members, *online]
        candidates = [m for m in dict.fromkeys(preferred) if m in online]
        member = evacuation_member(n, candidates, by_name, targets)
        if member is None:
            raise UsageError(
                f"cannot evacuate {n.name}: no cluster member is online",
                hint="bring a member back (incus cluster list)",
            )
        targets[n.name] = member
        out[n.name] = Placement(
            member,
            instance_name(n.name, member, n.member),
            evacuated_from=n.member,
            why=f"member {n.member} is {observed.members.get(n.member or '') or 'unknown'}",
        )
    return out


@dataclass(frozen=True)
class View:
    """What the planner works with on a cluster: one instance per node, and where each goes."""

    mine: dict[str, ObservedInstance]  # node (or orphan) -> its live copy, else a lost one
    stale: tuple[StaleCopy, ...]
    placed: dict[str, Placement]
    unreachable: dict[str, str]  # node -> why it is left alone (its member is not online)

    @property
    def evacuating(self) -> set[str]:
        return {n for n, p in self.placed.items() if p.evacuated_from}

    def notes(self, plex: str) -> list[str]:
        out = []
        if self.unreachable:
            out.append(
                "not touched, unreachable: "
                + ", ".join(f"{n} ({w})" for n, w in self.unreachable.items())
                + f"; bring the member back, or re-create them elsewhere: plex deploy {plex} "
                "--evacuate"
            )
        away = {n: p for n, p in self.placed.items() if p.why and not p.evacuated_from}
        if away:
            out.append(
                "evacuated, back to their planned member once it is online: "
                + ", ".join(f"{n} on {p.member} ({p.why})" for n, p in away.items())
            )
        return out


def view(
    plex: Plex, nodes: Sequence[Node], observed: Observed, evacuate: bool, ours: Observed
) -> View:
    """`ours`: `observed` holding only the plex's node instances."""
    names = [n.name for n in nodes]
    copies = node_copies(ours, names)
    mine = {node: c.current for node, c in copies.items() if c.current is not None}
    for n in nodes:
        # A lost copy shows no config: its role is the node's (etcd members, quorum).
        if n.name in mine and mine[n.name].role is None:
            copy = mine[n.name]
            config = {**copy.config, owner.ROLE: n.role.value}
            mine[n.name] = dataclasses.replace(copy, config=config)
    placed = placements(plex, nodes, observed, copies, evacuate)
    moving = {n for n, p in placed.items() if p.evacuated_from}
    # Nodes whose member is down or evacuated: plex cannot stop, start or probe them, and
    # Incus keeps their names; left as they are (and said so) unless re-created elsewhere.
    unreachable = {
        name: why
        for name, inst in mine.items()
        if (why := observed.unusable(inst)) is not None and name not in moving
    }
    for n in nodes:
        why = observed.members.get(n.member or "")
        if n.name not in mine and n.name not in moving and why:
            unreachable[n.name] = f"member {n.member} is {why}"
    return View(mine, stale_copies(copies), placed, unreachable)
