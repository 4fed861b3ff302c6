"""The order nodes may be (re)created in, as a dependency graph, and the waves it yields. Pure.

registry -> lb1 -> lb2 -> master -> server2 -> server3 ... -> every agent -> deletes

- lbs go one at a time so the keepalived VIP stays held by a peer while one is replaced;
- etcd admits one new member at a time, so in a rolling change each non-master server waits
  for the previous one (one server down at a time); in a cascade (a new cluster, nothing to keep
  available) the other servers join together once the master is ready: RKE2 tries a join etcd
  refuses for another member's sake ("too many learner members", "unhealthy cluster") again
  every second, in-process (k3s ETCD.Start, since k3s-io/k3s#7000), so etcd admits them one
  after the other as fast as it can;
- agents join through the VIP once the control plane is complete, all together (in a cascade:
  once the new master is ready, alongside the other servers' joins);
- orphans are deleted last, when their replacements (if any) are already serving.
Nodes that do not change are kept in the graph (so ordering is transitive) but not in a wave.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from graphlib import TopologicalSorter

from plex.model.plex import Role
from plex.model.topology import Node


def dependencies(
    nodes: Sequence[Node],
    server_order: Sequence[str],
    orphans: Collection[str] = (),
    cascade: bool = False,
) -> dict[str, set[str]]:
    """node -> the nodes that must be done first. `server_order`: the non-master servers, in the
    order they go (the caller puts broken ones first, which restores quorum sooner).

    `cascade` (a new cluster): the other servers and the agents join as soon as the master is
    ready, all together; otherwise (rolling) the servers go one at a time and the control
    plane is complete before any agent changes, as Kubernetes upgrades go."""
    graph: dict[str, set[str]] = {}
    previous: set[str] = set()  # the last step of the chain so far
    by_role = {role: [n for n in nodes if n.role is role] for role in Role}

    def chain(name: str) -> None:
        nonlocal previous
        graph[name] = set(previous)
        previous = {name}

    for n in by_role[Role.REGISTRY]:
        chain(n.name)
    for n in by_role[Role.LB]:
        chain(n.name)
    for n in by_role[Role.SERVER]:
        if n.is_master:
            chain(n.name)
    after_master = set(previous)
    if cascade:
        for name in server_order:
            graph[name] = set(after_master)
        previous = set(server_order) or after_master
    else:
        for name in server_order:
            chain(name)
    agents = [n.name for n in by_role[Role.AGENT]]
    for name in agents:
        graph[name] = set(after_master if cascade else previous)
    if agents:
        previous = set(agents) | (previous if cascade else set())
    every_node = {n.name for n in nodes}
    for name in orphans:
        graph[name] = set(every_node) or set(previous)
    return graph


def waves(
    graph: Mapping[str, Collection[str]], changing: Collection[str], order: Sequence[str]
) -> list[list[str]]:
    """Group the changing nodes into waves: a wave may start when every earlier one is healthy.

    `order` sorts the nodes inside a wave (for a stable, readable plan)."""
    rank = {name: i for i, name in enumerate(order)}
    sorter: TopologicalSorter[str] = TopologicalSorter(graph)
    sorter.prepare()  # raises graphlib.CycleError on a cycle: a bug in dependencies()
    out: list[list[str]] = []
    while sorter.is_active():
        ready = sorter.get_ready()
        wave = sorted((n for n in ready if n in changing), key=lambda n: (rank.get(n, 1 << 30), n))
        if wave:
            out.append(wave)
        sorter.done(*ready)
    return out


def ancestors(graph: Mapping[str, Collection[str]]) -> dict[str, set[str]]:
    """node -> every node it waits for, directly or through others."""
    out: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in out:
            out[name] = set()
            for dep in graph.get(name, ()):
                out[name] |= {dep} | visit(dep)
        return out[name]

    for name in graph:
        visit(name)
    return out


def step_dependencies(
    graph: Mapping[str, Collection[str]],
    planned: Sequence[Sequence[str]],
    barriers: Collection[int] = (),
) -> dict[str, tuple[str, ...]]:
    """For each node of the waves: the nodes of earlier waves it must wait for, so apply starts
    it the moment they are done rather than when their whole wave is (in a cascade the third
    server waits for the second, not for the agents that joined beside it).

    A node waits for its ancestors in the graph; a node of a `barriers` wave (its index in
    `planned`: the wave after the starts, an agent batch after the one before) waits for every
    node of every earlier wave."""
    anc = ancestors(graph)
    out: dict[str, tuple[str, ...]] = {}
    earlier: list[str] = []
    for i, wave in enumerate(planned):
        for name in wave:
            out[name] = tuple(m for m in earlier if i in barriers or m in anc.get(name, ()))
        earlier.extend(wave)
    return out


def batch_agents(
    grouped: list[list[str]], replaced_agents: Collection[str], limit: int
) -> list[list[str]]:
    """Split each wave's replaced agents into batches of `limit`: a rolling update keeps most
    of the workload capacity. New agents take nothing away, so they ride in the first batch."""
    out: list[list[str]] = []
    for wave in grouped:
        replaced = [n for n in wave if n in replaced_agents]
        if len(replaced) <= limit:
            out.append(wave)
            continue
        rest = [n for n in wave if n not in replaced]
        batches = [replaced[i : i + limit] for i in range(0, len(replaced), limit)]
        out.append(sorted(rest + batches[0], key=wave.index))
        out.extend(batches[1:])
    return out
