"""Cold start of a plex's existing nodes (after a snapshot restore, or after the consistent stop
of `plex snapshot`): every node starts as soon as what it depends on is ready, probes poll fast,
and nothing waits for a tier the graph does not need.

What a node that keeps its state needs before it starts (not what a fresh node needs: its data
and images are already there):
- registry, lbs: nothing;
- servers: each other, all at once (etcd members need a quorum of peers to elect a leader), and
  nothing outside their tier: the etcd data and the images are on the node, and RKE2 skips the
  join of an initialized server, ignoring an unreachable `server:` ("we don't want to fail
  startup ... as this will break cold cluster restart", k3s pkg/cluster/bootstrap.go);
- agents: the supervisor through the VIP (k3s agents fetch their config from `server:` at every
  start, retrying every 5 s): every lb ready, the VIP held by one of them, every server ready,
  and the supervisor answering through the VIP (haproxy routes to a server it saw down only
  after `rise` good checks).
A stopped kube node is started at once with its RKE2 unit held (plex.services.rke2_hold) and
released when what it needs is ready: its container's boot overlaps the others' restores and
the servers' start, and RKE2 starts exactly when it would have. A node is marked ready
(`user.plex.ready`) only once its probes pass; a node whose probes fail
stops the run, and the nodes still waiting never start.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from plex.backends.incus.protocol import ExecResult, Incus
from plex.deploy.probes import (
    Probe,
    ProbeResult,
    ProbeSet,
    expand,
    in_turn,
    probe_vip,
    run_probe,
)
from plex.deploy.shared_runs import SharedRuns
from plex.errors import Interrupted
from plex.model import owner, topology
from plex.model.identity import Identity
from plex.model.plex import Plex, Role, Virt
from plex.model.topology import Node
from plex.services import rke2_hold
from plex.services.apply_result import Report
from plex.store.identity import require_identity

POLL = 0.2  # seconds between probe attempts here: a restored node comes up within seconds


def fast(probes: ProbeSet, interval: float = POLL) -> ProbeSet:
    """The same probes, retried every `interval` at most."""

    def quick(ps: tuple[Probe, ...]) -> tuple[Probe, ...]:
        return tuple(dataclasses.replace(p, interval=min(p.interval, interval)) for p in ps)

    return ProbeSet(quick(probes.common), {r: quick(ps) for r, ps in probes.roles.items()})


def needs(node: Node, nodes: Sequence[Node]) -> list[str]:
    """The nodes that must be ready before `node` (keeping its state) starts; see above."""
    if node.role is Role.AGENT:
        return [n.name for n in nodes if n.role in (Role.LB, Role.SERVER)]
    return []


class ColdStart:
    """Prepare (e.g. restore), start and probe `nodes` in dependency order, one thread each."""

    def __init__(
        self, plex: Plex, incus: Incus, probes: ProbeSet, report: Report, parallel: int
    ) -> None:
        self.plex = plex
        self.incus = incus
        self.identity: Identity = require_identity(plex)  # host keys, for the sshd probe
        self.probes = fast(probes)
        self.report = report
        self.slots = threading.Semaphore(max(1, parallel))  # Incus calls at once
        self.failed = threading.Event()
        self.errors: list[BaseException] = []
        self.ready: dict[str, threading.Event] = {}
        self.vip = threading.Event()  # the agents' way in: supervisor through the VIP
        self.results: dict[str, list[ProbeResult]] = {}
        self.milestones: dict[str, float] = {}
        self.everyone: list[Node] = []
        self.shared: SharedRuns[ExecResult] = SharedRuns()  # the agents' probes on the master
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def milestone(self, what: str) -> None:
        """Seconds from the start of the run until the last node of `what` got there."""
        with self._lock:
            self.milestones[what] = max(self.milestones.get(what, 0.0), time.monotonic() - self._t0)

    def wait(self, events: Sequence[threading.Event]) -> None:
        """Until every event is set; Interrupted as soon as another node failed."""
        for e in events:
            while not e.wait(0.05):
                if self.failed.is_set():
                    raise Interrupted("another node failed: not started")

    def run(
        self,
        nodes: Sequence[Node],
        prepare: Callable[[Node], bool],
        running: Sequence[Node] = (),
    ) -> list[ProbeResult]:
        """`prepare(node)` readies a stopped node's disk and says whether it left the node
        running (a restore of a running instance starts it again); it takes `slots` around
        its Incus calls itself. `running`: nodes that stay
        up untouched (their readiness is given). Returns the probe results in plan order."""
        self._t0 = time.monotonic()
        everyone = [*running, *nodes]
        self.everyone = everyone
        self.ready = {n.name: threading.Event() for n in everyone}
        for n in running:
            self.ready[n.name].set()
        servers = [n for n in nodes if n.role is Role.SERVER]
        # Servers start together, once every one of them is prepared.
        together = threading.Barrier(len(servers)) if servers else None
        lbs = [n for n in everyone if n.role is Role.LB]
        restarted_lbs = any(n.role is Role.LB for n in nodes)

        def one(node: Node) -> None:
            try:
                self._node(node, prepare, together if node.role is Role.SERVER else None)
            except BaseException as e:
                with self._lock:
                    self.errors.append(e)
                self.failed.set()
                if together is not None:
                    together.abort()

        def route() -> None:
            """The agents' way in: the VIP held (if the lbs restarted), then the supervisor
            answering through it. haproxy marks servers that were down DOWN and routes to them
            again only after `rise` good checks; an agent let in before that is refused and
            k3s retries only 5 s later."""
            try:
                self.wait([self.ready[n.name] for n in lbs])
                if restarted_lbs:
                    self.report("lb", "VIP")
                    result = probe_vip(self.incus, self.plex, sleep=lambda _: time.sleep(POLL))
                    self.results["VIP"] = [result]
                    self.milestone("VIP held")
                self.wait([self.ready[n.name] for n in everyone if n.role is Role.SERVER])
                api = topology.api_address(self.plex)
                probe = Probe(
                    "supervisor through the VIP",
                    f"curl -sk --max-time 2 https://{api}:9345/ping",
                    "^pong$",
                    timeout=60,
                    interval=POLL,
                )
                master = topology.master(self.plex).name
                self.results["VIP"] = [
                    *self.results.get("VIP", []),
                    run_probe(self.incus, master, "lb", probe, cancelled=self.failed.is_set),
                ]
                self.milestone("supervisor through the VIP")
                self.vip.set()
            except BaseException as e:
                with self._lock:
                    self.errors.append(e)
                self.failed.set()

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in nodes]
        if any(n.role is Role.AGENT for n in nodes):
            threads.append(threading.Thread(target=route, daemon=True))
        else:
            self.vip.set()  # no agent waits for the way in
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            # The cause first: the nodes that gave up because of it say only "not started".
            self.errors.sort(key=lambda e: isinstance(e, Interrupted))
            raise self.errors[0]
        order = [n.name for n in nodes]
        out = [r for name in order for r in self.results.get(name, [])]
        return out + self.results.get("VIP", [])

    def _node(
        self, node: Node, prepare: Callable[[Node], bool], together: threading.Barrier | None
    ) -> None:
        name = node.name
        up = prepare(node)
        self.milestone("prepared")
        # Until its probes pass again the node is not known to be ready: a run killed here
        # leaves it for the next deploy to check (a restore also brings back the snapshot's
        # config, mark included).
        self.incus.set_config(name, {owner.READY: "false"})
        # A stopped kube node boots at once, its RKE2 unit held until its turn (below): the
        # container's boot overlaps the others' restores and the servers' start.
        held = not up and node.role.is_kube and node.virt is not Virt.VM
        if held:
            rke2_hold.hold(self.incus, name, node.role)
            self.report(name, "start (RKE2 held until its turn)")
            with self.slots:
                self.incus.start(name)
        if together is not None:
            try:
                together.wait()
            except threading.BrokenBarrierError:
                raise Interrupted("another server failed: not started") from None
        deps = needs(node, self.everyone)
        if deps:
            self.report(name, f"waits for {len(deps)} node(s) and the supervisor via the VIP")
            self.wait([*(self.ready[d] for d in deps), self.vip])
        if held:
            self.report(name, f"{rke2_hold.unit(node.role)} (its turn)")
            rke2_hold.release(self.incus, name, node.role)
        elif not up:
            self.report(name, "start")
            with self.slots:
                self.incus.start(name)
        self.report(name, "probes")
        self.results[name] = self.probe(node)
        self.incus.set_config(name, {owner.READY: "true"})
        self.report(name, "ready")
        self.ready[name].set()
        self.milestone(f"{node.role.value} ready")

    def probe(self, node: Node) -> list[ProbeResult]:
        """The node's `first` probes, then the others, each group at once (they check
        independent things; one after the other would add their latencies up); results in
        that order. The others wait because until the first ones pass (systemd's, which
        waits in the node for the boot to end) they could only fail, and every attempt is
        an Incus exec: CPU taken from the nodes still booting."""
        master = topology.master(self.plex).name

        def one(probe: Probe) -> ProbeResult:
            target = master if probe.runs_on == "master" else node.name
            shared = self.shared if probe.runs_on == "master" else None
            return run_probe(
                self.incus, target, node.name, probe, cancelled=self.failed.is_set, shared=shared
            )

        results: list[ProbeResult] = []
        for turn in in_turn(self.probes.for_role(node.role)):
            concrete = [c for p in turn for _, c in expand(p, self.plex, node, self.identity)]
            if concrete:
                with ThreadPoolExecutor(max_workers=len(concrete)) as pool:
                    results += pool.map(one, concrete)
        return results


def each(parallel: int, fn: Callable[[str], object], names: Sequence[str]) -> None:
    """`fn` over `names`, `parallel` at a time (a failure is raised after the others ran)."""
    if not names:
        return
    with ThreadPoolExecutor(max_workers=min(parallel, len(names))) as pool:
        list(pool.map(fn, names))
