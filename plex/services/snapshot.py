"""Pristine snapshots: keep a deployed, healthy plex as copy-on-write snapshots of every node and
put the lab back to it in seconds (`plex snapshot`, `plex reset --to pristine`).

Consistency: etcd's members must be captured at one moment, so every kube node is stopped
(cleanly, all at once) before any snapshot is taken, then started again; lbs and the registry
hold no cluster state and are snapshotted as they run. The registry's cache lives in its own
custom volume, which no instance snapshot includes: the cache survives a snapshot reset too.

Pruning: a snapshot belongs to its instance, and an instance is never changed in place: a new
image generation (or spec) replaces the instance, and its snapshots go with it. A node's
snapshot therefore always belongs to the image the node runs (the snapshot name carries that
image's digest, and a reset checks it). Taking a new snapshot drops the older ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.backends.incus import Incus
from plex.deploy.actions import Plan
from plex.deploy.probes import ProbeResult, load_probes, probe_node, probe_vip
from plex.errors import UsageError
from plex.model import owner, topology
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.model.topology import Node
from plex.services.apply_result import Report
from plex.services.balancers import Balancers
from plex.services.deploy import make_deploy_plan
from plex.services.parallelism import adaptive_parallel
from plex.store.identity import require_identity
from plex.store.lock import plex_lock

PREFIX = "plex-pristine-"
PRISTINE = "pristine"  # the only target of `plex reset --to` today


def snapshot_name(image_digest: str, stamp: str) -> str:
    """`plex-pristine-<image12>-<stamp>`: the image it belongs to, and when it was taken."""
    return f"{PREFIX}{image_digest[:12]}-{stamp}"


def _stamp(name: str) -> str:
    return name.rsplit("-", 1)[-1]


@dataclass
class SnapshotResult:
    snapshot: str  # the stamp shared by every node's snapshot
    nodes: list[str]
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    probes: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 2),
            "phases": {k: round(v, 2) for k, v in self.phases.items()},
            "probes": [p.to_json() for p in self.probes],
        }


def _tiers(plex: Plex) -> list[list[Node]]:
    """Dependency order for starting: registry and lbs, then every server together (etcd
    members need each other for quorum), then agents."""
    nodes = topology.nodes(plex)
    return [
        [n for n in nodes if n.role in (Role.REGISTRY, Role.LB)],
        [n for n in nodes if n.role is Role.SERVER],
        [n for n in nodes if n.role is Role.AGENT],
    ]


class Snapshots:
    def __init__(
        self, plex: Plex, incus: Incus, root: Path, report: Report | None = None, parallel: int = 0
    ) -> None:
        self.plex = plex
        self.incus = incus
        self.root = root
        self.report: Report = report or (lambda node, msg: None)
        self.parallel = parallel if parallel > 0 else adaptive_parallel()

    def _each(self, fn: Callable[[str], object], names: Iterable[str]) -> None:
        names = list(names)
        if not names:
            return
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(names))) as pool:
            list(pool.map(fn, names))

    def _healthy(self, plan: Plan) -> None:
        if not plan.empty:
            todo = ", ".join(f"{a.node} ({a.verb.value})" for w in plan.waves for a in w)
            raise UsageError(
                f"plex '{self.plex.name}' is not in its deployed state: {todo}",
                hint=f"run: plex deploy {self.plex.name}, then snapshot it",
            )

    def _probe(self, nodes: list[Node]) -> list[ProbeResult]:
        identity = require_identity(self.plex)
        probes = load_probes(self.root / "deploy" / "probes.yaml")
        results: list[ProbeResult] = []

        def one(node: Node) -> list[ProbeResult]:
            self.report(node.name, "probes")
            out = probe_node(self.incus, self.plex, node, identity, probes)
            self.report(node.name, "ready")
            return out

        if not nodes:
            return results
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(nodes))) as pool:
            for r in pool.map(one, nodes):
                results.extend(r)
        return results

    def _start_in_order(self, result: SnapshotResult) -> None:
        lbs = Balancers(self.plex, self.incus, self.report)
        for i, tier in enumerate(_tiers(self.plex)):
            if not tier:
                continue
            t = time.monotonic()
            for n in tier:
                self.report(n.name, "start")
            self._each(self.incus.start, [n.name for n in tier])
            result.probes += self._probe(tier)
            if any(n.role is Role.LB for n in tier):
                result.probes.append(probe_vip(self.incus, self.plex))
            servers = [n.name for n in tier if n.role is Role.SERVER]
            if servers:
                lbs.ready(servers)  # a restored lb has them enabled already: idempotent
            result.phases[f"start {['lb', 'servers', 'agents'][i]}"] = time.monotonic() - t

    def take(self, plan: Plan, observed: Observed) -> SnapshotResult:
        """Snapshot every node of a healthy plex, kube nodes stopped together."""
        start = time.monotonic()
        self._healthy(plan)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        nodes = topology.nodes(self.plex)
        result = SnapshotResult(stamp, [n.name for n in nodes])
        kube = [n.name for n in nodes if n.role.is_kube]
        t = time.monotonic()
        for name in kube:
            self.report(name, "stop (consistent snapshot)")
        # A clean stop: etcd and the datastore flush; all at once, so no member runs ahead.
        self._each(lambda name: self.incus.stop(name, force=False), kube)
        result.phases["stop"] = time.monotonic() - t
        t = time.monotonic()

        def snap(name: str) -> None:
            inst = observed.instances[name]
            old = [s for s in self.incus.snapshots(name) if s.startswith(PREFIX)]
            self.report(name, "snapshot")
            self.incus.create_snapshot(name, snapshot_name(inst.image or "", stamp))
            for s in old:
                self.incus.delete_snapshot(name, s)

        self._each(snap, [n.name for n in nodes])
        result.phases["snapshot"] = time.monotonic() - t
        # Only kube nodes were stopped; lbs and registry keep running through their probes.
        _, servers, agents = _tiers(self.plex)
        t = time.monotonic()
        self._each(self.incus.start, [n.name for n in servers])
        result.probes += self._probe(servers)
        self._each(self.incus.start, [n.name for n in agents])
        result.probes += self._probe(agents)
        result.phases["start"] = time.monotonic() - t
        result.seconds = time.monotonic() - start
        return result

    def latest(self, observed: Observed) -> str:
        """The newest snapshot stamp every node has, for the image it runs."""
        common: set[str] | None = None
        for n in topology.nodes(self.plex):
            inst = observed.instances.get(n.name)
            if inst is None:
                raise UsageError(
                    f"{n.name} is not deployed: there is nothing to restore",
                    hint=f"run: plex deploy {self.plex.name}",
                )
            mine = {
                _stamp(s)
                for s in self.incus.snapshots(n.name)
                if s.startswith(f"{PREFIX}{(inst.image or '')[:12]}-")
            }
            if not mine:
                raise UsageError(
                    f"{n.name} has no pristine snapshot of the image it runs "
                    f"({(inst.image or '?')[:12]})",
                    hint=f"it was created or replaced since the last snapshot: run plex "
                    f"snapshot {self.plex.name} (or plex reset {self.plex.name} for a cascade)",
                )
            common = mine if common is None else common & mine
        if not common:
            raise UsageError(
                f"the nodes of plex '{self.plex.name}' share no pristine snapshot",
                hint=f"run: plex snapshot {self.plex.name}",
            )
        return max(common)

    def restore(self, observed: Observed) -> SnapshotResult:
        """Every node back to the pristine snapshot, started in dependency order, probed."""
        start = time.monotonic()
        stamp = self.latest(observed)
        nodes = topology.nodes(self.plex)
        result = SnapshotResult(stamp, [n.name for n in nodes])
        t = time.monotonic()
        for n in nodes:
            self.report(n.name, "stop")
        # Forced: the state on disk is about to be thrown away anyway.
        self._each(lambda name: self.incus.stop(name, force=True), [n.name for n in nodes])
        result.phases["stop"] = time.monotonic() - t
        t = time.monotonic()

        def restore(name: str) -> None:
            inst = observed.instances[name]
            self.report(name, "restore")
            self.incus.restore_snapshot(name, snapshot_name(inst.image or "", stamp))
            # The snapshot was taken from a ready node: the mark is current again.
            self.incus.set_config(name, {owner.READY: "true"})

        self._each(restore, [n.name for n in nodes])
        result.phases["restore"] = time.monotonic() - t
        self._start_in_order(result)
        result.seconds = time.monotonic() - start
        return result


def take_snapshot(
    plex: Plex, incus: Incus, root: Path, report: Report | None = None, parallel: int = 0
) -> SnapshotResult:
    with plex_lock(plex.name, "deploy"):
        plan, observed = make_deploy_plan(plex, incus)
        return Snapshots(plex, incus, root, report, parallel).take(plan, observed)


def reset_to(
    plex: Plex,
    incus: Incus,
    root: Path,
    target: str,
    report: Report | None = None,
    parallel: int = 0,
) -> SnapshotResult:
    if target != PRISTINE:
        raise UsageError(f"--to {target}: unknown reset target", hint=f"use --to {PRISTINE}")
    with plex_lock(plex.name, "deploy"):
        observed = incus.observe(plex.name)
        return Snapshots(plex, incus, root, report, parallel).restore(observed)
