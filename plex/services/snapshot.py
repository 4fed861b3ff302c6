"""Pristine snapshots: keep a deployed, healthy plex as copy-on-write snapshots of every node and
put the lab back to it in seconds (`plex snapshot`, `plex reset --to pristine`).

Consistency: etcd's members must be captured at one moment, so every kube node is stopped
(cleanly, all at once) before any snapshot is taken, then started again; lbs and the registry
hold no cluster state and are snapshotted as they run. The registry's cache lives in its own
custom volume, which no instance snapshot includes: the cache survives a snapshot reset too.

Pruning: a snapshot belongs to the image generation it was taken of (its name carries the
node's image digest, and a reset restores only a set every node holds for the image it runs);
plex.services.pristine.retire deletes the sets a deploy, an image prune or a destroy retired.
Taking a new snapshot drops the older ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.deploy.actions import Plan
from plex.deploy.copies import node_copies
from plex.deploy.probes import ProbeResult, load_probes
from plex.errors import UsageError
from plex.model import topology
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.model.record import record_json
from plex.model.topology import Node
from plex.services.apply_result import Report
from plex.services.cold_start import ColdStart, each
from plex.services.deploy import make_deploy_plan
from plex.services.parallelism import adaptive_parallel
from plex.services.pristine import PREFIX, snapshot_name, whole_sets
from plex.services.progress import unreported
from plex.store.lock import plex_lock

PRISTINE = "pristine"  # the only target of `plex reset --to` today


@dataclass
class SnapshotResult:
    snapshot: str  # the stamp shared by every node's snapshot
    nodes: list[str]
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    probes: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return record_json(self, phases={k: round(v, 2) for k, v in self.phases.items()})


class Snapshots:
    def __init__(
        self, plex: Plex, incus: Incus, root: Path, report: Report | None = None, parallel: int = 0
    ) -> None:
        self.plex = plex
        self.incus = incus
        self.root = root
        self.report: Report = report or unreported
        self.parallel = parallel if parallel > 0 else adaptive_parallel()

    def _each(self, fn: Callable[[str], object], names: Iterable[str]) -> None:
        each(self.parallel, fn, list(names))

    def _healthy(self, plan: Plan) -> None:
        if not plan.empty:
            todo = ", ".join(f"{a.node} ({a.verb.value})" for w in plan.waves for a in w)
            raise UsageError(
                f"plex '{self.plex.name}' is not in its deployed state: {todo}",
                hint=f"run: plex deploy {self.plex.name}, then snapshot it",
            )

    def _home(self, observed: Observed) -> None:
        """Snapshots belong to a node's own instance: refuse while any node is served by an
        evacuated copy or left on a member that is down (plex.deploy.copies)."""
        copies = node_copies(observed, [n.name for n in topology.nodes(self.plex)])
        away = [
            f"{c.node} ({'runs as ' + c.live.name if c.live else 'its member is down'})"
            for c in copies.values()
            if (c.live is not None and c.live.name != c.node) or (c.live is None and c.lost)
        ]
        if away:
            raise UsageError(
                f"plex '{self.plex.name}' has nodes away from home: {', '.join(away)}",
                hint=f"once the member is back, run: plex deploy {self.plex.name}",
            )

    def _cold_start(self) -> ColdStart:
        probes = load_probes(self.root / "deploy" / "probes.yaml")
        return ColdStart(self.plex, self.incus, probes, self.report, self.parallel)

    def take(self, plan: Plan, observed: Observed) -> SnapshotResult:
        """Snapshot every node of a healthy plex, kube nodes stopped together."""
        start = time.monotonic()
        self._home(observed)
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
        # Only kube nodes were stopped; lbs and registry kept running. Servers start together,
        # agents once the servers are ready.
        cold = self._cold_start()
        kube_nodes = [n for n in nodes if n.role.is_kube]
        infra = [n for n in nodes if not n.role.is_kube]
        result.probes = cold.run(kube_nodes, lambda node: False, running=infra)
        result.phases.update({f"start: {k}": v for k, v in cold.milestones.items()})
        result.seconds = time.monotonic() - start
        return result

    def latest(self, observed: Observed) -> str:
        """The newest pristine set every node holds for the image it runs (one line naming
        the nodes without one when there is none: the deployed generation has no snapshot)."""
        self._home(observed)
        nodes = topology.nodes(self.plex)
        for n in nodes:
            if n.name not in observed.instances:
                raise UsageError(
                    f"{n.name} is not deployed: there is nothing to restore",
                    hint=f"run: plex deploy {self.plex.name}",
                )
        images = {n.name: observed.instances[n.name].image or "" for n in nodes}
        held: dict[str, list[str]] = {}
        self._each(lambda name: held.__setitem__(name, self.incus.snapshots(name)), images)
        sets = whole_sets(images, held)
        if sets:
            return max(sets)
        without = [
            f"{name} ({images[name][:12]})"
            for name in images
            if not any(s.startswith(f"{PREFIX}{images[name][:12]}-") for s in held[name])
        ]
        why = (
            f"{', '.join(without[:3])}{f' and {len(without) - 3} more' if len(without) > 3 else ''}"
            f" {'has' if len(without) == 1 else 'have'} none of the image running"
            if without
            else "the nodes' snapshots are of different moments"
        )
        raise UsageError(
            f"no pristine snapshot matches the deployed generation of plex "
            f"'{self.plex.name}': {why}",
            hint=f"take one of this generation: plex snapshot {self.plex.name} "
            f"(or plex reset {self.plex.name} for a cascade)",
        )

    def restore(self, observed: Observed) -> SnapshotResult:
        """Every node back to the pristine snapshot, started in dependency order, probed.

        Consistency: every kube node is stopped before any of them is restored, and no server
        starts before all servers are restored, so etcd's members come back together from the
        one consistent snapshot (no member left running ahead of the others). The registry and
        lbs hold no cluster state: each is restored at once while running (Incus stops,
        restores and starts it again in one call)."""
        start = time.monotonic()
        stamp = self.latest(observed)
        nodes = topology.nodes(self.plex)
        result = SnapshotResult(stamp, [n.name for n in nodes])
        kube = [n for n in nodes if n.role.is_kube]
        cold = self._cold_start()
        left = {n.name for n in kube}  # kube nodes still running their post-snapshot state
        stopped = threading.Event()
        lock = threading.Lock()
        if not left:
            stopped.set()

        def prepare(node: Node) -> bool:
            name = node.name
            snap = snapshot_name(observed.instances[name].image or "", stamp)
            running = observed.instances[name].running
            if node.role.is_kube:
                self.report(name, "stop")
                with cold.slots:
                    # Forced: the state on disk is about to be thrown away anyway.
                    self.incus.stop(name, force=True)
                with lock:
                    left.discard(name)
                    if not left:
                        cold.milestone("kube nodes stopped")
                        stopped.set()
                running = False
            self.report(name, "restore")
            with cold.slots:
                self.incus.restore_snapshot(name, snap)
            if node.role is Role.SERVER:
                # No restored server may meet a node still running what came after the
                # snapshot: its etcd would catch up from it.
                cold.wait([stopped])
            return running

        try:
            result.probes = cold.run(nodes, prepare)
        finally:
            result.phases = dict(cold.milestones)
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
        incus.wait_for_operations(plex.name)
        observed = incus.observe(plex.name)
        return Snapshots(plex, incus, root, report, parallel).restore(observed)
