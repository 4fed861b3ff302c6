"""Run a plan: waves in order, the nodes of a wave in parallel, probes gating the next wave.

For each node: out of the lbs' rotation (a server), drain (when the plan says so), delete,
create from the exact image fingerprint, push the node's private files from the identity (host
keys, join token, VRRP password; 0600, checked) and, for a master joining a running cluster,
the drop-in that points it at the VIP; start, pass the role's probes, back into rotation, then
mark it ready (`user.plex.ready`). A node without that mark is an unfinished deploy: the next
plan replaces it, so a deploy killed anywhere is finished by simply deploying again. A stopped
node is started and probed; if it fails its probes it is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from plex.backends.incus.protocol import ExecResult, Incus
from plex.backends.ssh import host_key_probe
from plex.deploy import etcd
from plex.deploy.actions import Action, Plan, Verb
from plex.deploy.probes import ProbeResult, ProbeSet, probe_node, probe_vip
from plex.deploy.shared_runs import SharedRuns
from plex.errors import BackendError, Interrupted, ProbeError
from plex.model import owner, topology
from plex.model.identity import Identity
from plex.model.plex import Plex, Role
from plex.model.topology import Node
from plex.services import learner_promotion, rke2_hold
from plex.services.apply_result import ApplyResult, Report, WaveReport
from plex.services.balancers import Balancers
from plex.services.kube_steps import KubeSteps
from plex.services.node_create import JOIN_DROPIN, NodeFactory
from plex.services.node_shell import NodeShell
from plex.services.parallelism import adaptive_parallel, boot_slots
from plex.services.progress import unreported
from plex.services.registry_secrets import push_credentials
from plex.services.stale import delete_stale
from plex.services.steps import Step, run_steps

# Importers of these names from here keep working (they moved with their job).
__all__ = ["JOIN_DROPIN", "Applier", "ApplyResult", "Report", "WaveReport", "adaptive_parallel"]


class Applier:
    def __init__(
        self,
        plex: Plex,
        incus: Incus,
        identity: Identity,
        probes: ProbeSet,
        parallel: int = 0,
        report: Report | None = None,
        deploy_id: str = "",
        force: bool = False,
    ) -> None:
        self.plex = plex
        self.incus = incus
        self.identity = identity
        self.probes = probes
        self.parallel = parallel if parallel > 0 else adaptive_parallel()
        # Agents' boots are CPU work: fewer at once than creates (plex.services.parallelism).
        self.boots = threading.Semaphore(min(self.parallel, boot_slots()))
        self.report: Report = report or unreported
        self.cancel = threading.Event()
        # Cascade successors created during the teardown, each started when its turn comes.
        self.creates = ThreadPoolExecutor(max_workers=self.parallel)
        self.precreated: dict[str, Future[None]] = {}
        self.held: set[str] = set()  # booted early, rke2-server held until their turn
        self.lbs = Balancers(plex, incus, self.report)
        self.factory = NodeFactory(plex, incus, identity, self.report, deploy_id)
        self.shell = NodeShell(plex, incus, identity)  # incus exec, or SSH for VM nodes
        # --force: a failed drain or node deletion is reported and skipped, not fatal.
        self.kube = KubeSteps(plex, incus, self.report, force)
        self.instances: dict[str, str] = {}  # node -> instance, when not named after it
        # The agents of a wave poll the same command on the master: one run for all.
        self.shared: SharedRuns[ExecResult] = SharedRuns()
        self._sleep: Callable[[float], None] = time.sleep  # tests replace it

    def _check(self) -> None:
        if self.cancel.is_set():
            raise Interrupted("deploy cancelled")

    def apply(self, plan: Plan) -> ApplyResult:
        """Every node the moment the nodes it waits for (`plan.after`) are done, and each
        wave's checks (the VIP after lbs, etcd's members after servers) before any node that
        waits for that wave's lbs or servers."""
        start = time.monotonic()
        # Nodes whose instance is not named after them (evacuated copies), for every exec.
        self.instances = {a.node: a.created for a in plan.actions if a.created != a.node}
        self.lbs.instances = self.instances
        steps: list[Step[list[ProbeResult]]] = []
        gate: dict[str, str] = {}  # node -> the check its dependents wait for too
        for i, wave in enumerate(plan.waves, 1):
            lbs = [a.node for a in wave if a.role is Role.LB and a.verb is not Verb.DELETE]
            servers = [a.node for a in wave if a.role is Role.SERVER]
            if lbs:
                steps.append(Step(f"#vip{i}", self.vip, lbs))
                gate.update(dict.fromkeys(lbs, f"#vip{i}"))
            if servers:
                # Only a later server change (a join or a removal) needs etcd to have settled.
                later = any(a.role is Role.SERVER for w in plan.waves[i:] for a in w)
                check = functools.partial(self.etcd, servers if later else [])
                steps.append(Step(f"#etcd{i}", check, servers))
                gate.update(dict.fromkeys(servers, f"#etcd{i}"))
        earlier: list[str] = []
        for wave in plan.waves:
            for a in wave:
                after = list(plan.after.get(a.node, earlier))
                after += [gate[n] for n in after if n in gate]
                if a.node == plan.cascade_from:
                    steps.append(
                        Step("#teardown", lambda: self.teardown_cascade(plan), list(after))
                    )
                    after.append("#teardown")
                steps.append(Step(a.node, functools.partial(self.node, a), after))
            earlier += [a.node for a in wave]
        try:
            # Stale copies first: a lost copy whose member came back holds the node's addresses.
            delete_stale(self.incus, plan.stale, self.report)
            done = run_steps(steps, self.parallel, self.cancel)
        finally:
            self.cancel.set()
            self.creates.shutdown(wait=True)
        reports = []
        for i, wave in enumerate(plan.waves, 1):
            keys = [a.node for a in wave] + [k for k in (f"#vip{i}", f"#etcd{i}") if k in done]
            rep = WaveReport(i, [a.node for a in wave])
            for k in keys:
                rep.probes.extend(done[k].result)
            rep.seconds = max(done[k].ended for k in keys) - min(done[k].started for k in keys)
            reports.append(rep)
        spans = {k: (d.started, d.ended) for k, d in done.items() if not k.startswith("#")}
        return ApplyResult(reports, time.monotonic() - start, spans)

    def vip(self) -> list[ProbeResult]:
        self.report("lb", "VIP")
        return [probe_vip(self.shell, self.plex, instances=self.instances)]

    def etcd(self, servers: list[str]) -> list[ProbeResult]:
        """etcd's members checked; then, before a later wave changes them again (`servers`:
        this wave's, empty when none follows), until etcd counts the new ones as connected."""
        members = self.kube.check_etcd_members(unborn=list(self.precreated))
        if servers and len(members) > 1:  # a one-member cluster takes the next one at once
            self.etcd_connected(servers)
        return []

    def etcd_connected(self, servers: list[str]) -> None:
        """Until the etcd of every server of the wave has run long enough to be counted as
        connected (plex.deploy.etcd.settle_wait): etcd refuses the next member add or remove
        before that (plex.deploy.etcd.HEALTH_INTERVAL)."""

        def age(name: str) -> int | None:
            res = self.shell.exec(self.instances.get(name, name), etcd.AGE)
            return etcd.parse_age(res.returncode, res.stdout)

        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            # No etcd process to see (a node whose runtime hides it): nothing to wait on.
            ages = [a for a in pool.map(age, servers) if a is not None]
        wait = etcd.settle_wait(ages)
        if wait > 0:
            self.report("etcd", f"{wait:.1f}s until etcd counts the new members as connected")
            self._sleep(wait)

    def teardown_cascade(self, plan: Plan) -> list[ProbeResult]:
        """Delete every node the new master will replace before it starts, and create (not
        start) their successors meanwhile, the master's first.

        A new master is a new cluster: old servers left running behind the VIP would take the
        joins meant for it, and old agents would keep reporting to a cluster that is gone. The
        successors start when their turn comes (plan.after), already created."""
        cascaded = [a for a in plan.actions if a.verb is Verb.REPLACE and a.cascade_from]
        # Every server of the old cluster leaves the lbs' rotation first: the new master's
        # joiners must reach only servers of the new cluster, each once its probes pass.
        self.lbs.maint([a.node for a in cascaded])
        deleted = {a.node: self.creates.submit(self.delete, a) for a in cascaded}
        for a in cascaded:
            # The new master is created once the old cluster is gone; the others right after
            # their own deletion. The other servers boot at once, rke2-server held until their
            # turn to join (plex.services.rke2_hold): their boot overlaps the master's.
            wait_for = list(deleted.values()) if a.node == plan.cascade_from else [deleted[a.node]]
            early = (
                a.role is Role.SERVER
                and a.node != plan.cascade_from
                and a.spec is not None
                and a.spec.type != "virtual-machine"  # no incus-agent to release it with
            )
            if early:
                self.held.add(a.node)
            self.precreated[a.node] = self.creates.submit(self.recreate, a, wait_for, early)
        for fut in deleted.values():
            fut.result()
        if plan.cascade_from in self.precreated:
            self.precreated[plan.cascade_from].result()
        return []

    def delete(self, action: Action) -> None:
        if action.evacuate_from:
            self.report(action.node, f"left on {action.evacuate_from} (down): re-created elsewhere")
            return
        self.report(action.node, "delete (cascade)")
        self.incus.delete_instance(action.instance or action.node)

    def recreate(self, action: Action, deleted: list[Future[None]], early: bool = False) -> None:
        for fut in deleted:
            fut.result()
        self._check()
        self.build(action)
        if early:
            assert action.spec is not None
            rke2_hold.hold(self.incus, action.spec.name, Role.SERVER)
            self._check()
            self.report(action.node, "start (rke2-server held until its turn)")
            self.incus.start(action.spec.name)

    # -- one node --------------------------------------------------------------------------

    def node(self, action: Action) -> list[ProbeResult]:
        if action.verb is Verb.START:
            return self.start(action)
        return self.replace(action)

    def start(self, action: Action) -> list[ProbeResult]:
        """Start a stopped node that is otherwise current; replace it if it fails its probes."""
        name = action.node
        node = topology.resolve(self.plex, name)
        if action.role is Role.SERVER:
            self.lbs.maint([name])
        self.report(name, "start")
        self.incus.start(action.created)
        self.report(name, "probes")
        try:
            results = self.probe(node)
        except ProbeError as e:
            if node.is_master and not action.join:
                hint = (
                    f"no other server is alive to join: plex deploy {self.plex.name} "
                    "--replace master builds a new cluster"
                )
                raise ProbeError(
                    f"{name} failed its probes after start: {e.message}", hint=hint
                ) from None
            self.report(name, "failed its probes after start: replacing")
            # It never came up: delete its Node (and etcd member) before the replacement joins.
            forget = action.role is not None and action.role.is_kube
            return self.replace(
                dataclasses.replace(
                    action,
                    verb=Verb.REPLACE,
                    drain=False,
                    forget=forget,
                    generation=action.generation + 1,
                )
            )
        if action.role is Role.SERVER:
            self.lbs.ready([name])
        self.report(name, "ready")
        return results

    def replace(self, action: Action) -> list[ProbeResult]:
        name = action.node
        if name in self.precreated:
            # Deleted and created in the cascade's teardown (its errors are raised here).
            self.precreated.pop(name).result()
            return self.boot(action)
        if action.role is Role.SERVER:
            # Out of rotation before it goes away (or, new, until its probes pass).
            self.lbs.maint([name])
        if action.verb in (Verb.REPLACE, Verb.DELETE):
            if action.drain:
                self.kube.drain(name)
            elif action.forget:
                self.kube.forget(name)
            if action.evacuate_from:
                self.report(name, f"left on {action.evacuate_from} (down): re-created elsewhere")
            else:
                self.report(name, "delete")
                self.incus.delete_instance(action.instance or name)
        if action.verb is Verb.DELETE:
            self.report(name, "deleted")
            return []
        if self.joins(action):
            # RKE2 takes a server with an empty data dir only once no etcd member of its node
            # is left from an earlier life (its Node just deleted: RKE2 removes that one).
            self.kube.old_member_gone(name, grace=2.0 if action.drain or action.forget else 0.0)
        self._check()
        self.build(action)
        return self.boot(action)

    def joins(self, action: Action) -> bool:
        """Every server but a bootstrapping master joins the running cluster."""
        return action.role is Role.SERVER and (
            action.join or not topology.resolve(self.plex, action.node).is_master
        )

    def build(self, action: Action) -> None:
        """Create the node (not started), its private files pushed."""
        assert action.spec is not None
        self.factory.create(action.spec, action.generation, join=action.join)

    def boot(self, action: Action) -> list[ProbeResult]:
        """Start the created node, pass its probes, back into rotation, mark it ready."""
        assert action.spec is not None
        if action.role is not Role.AGENT:
            # Servers, lbs and the registry are on the path every later node waits for:
            # never queued behind agents.
            return self._boot(action)
        with self.boots:
            return self._boot(action)

    def _boot(self, action: Action) -> list[ProbeResult]:
        assert action.spec is not None
        name, made = action.node, action.spec.name  # the node; its instance
        self._check()
        if name in self.held:
            self.report(name, "rke2-server (its turn to join)")
            rke2_hold.release(self.incus, made, Role.SERVER)
        else:
            self.report(name, "start")
            self.incus.start(made)
        # Upstream logins and the CI store's htpasswd line never go into an image: they are
        # pushed to each new registry node (0600/0640, checked) once it runs, since their
        # group is looked up and their units restarted inside it.
        if action.spec.role is Role.REGISTRY and push_credentials(self.plex, self.incus, made):
            self.report(name, "credentials")
        self.report(name, "probes")
        node = topology.resolve(self.plex, name)
        # Every server but a bootstrapping master joins as an etcd learner: plex promotes it
        # while its probes wait (plex.services.learner_promotion).
        with (
            learner_promotion.promoting(self.plex, self.incus, name, self.report)
            if self.joins(action)
            else contextlib.nullcontext()
        ):
            if action.spec.type == "virtual-machine":
                # No incus-agent in the VM: wait for sshd with the node's own host key, then
                # run the role's probes over SSH (logged in with the plex's deploy key).
                results = [self.probe_ssh(node), *self.probe(node)]
            else:
                results = self.probe(node)
        if action.role is Role.SERVER:
            self.lbs.ready([name])
        self.incus.set_config(made, {owner.READY: "true"})
        self.report(name, "ready")
        return results

    def probe(self, node: Node) -> list[ProbeResult]:
        """The role's probes, inside the node; stopped early when the deploy is cancelled."""
        return probe_node(
            self.shell,
            self.plex,
            node,
            self.identity,
            self.probes,
            cancelled=self.cancel.is_set,
            instances=self.instances,
            shared=self.shared,
        )

    def probe_ssh(self, node: Node, timeout: float = 300.0) -> ProbeResult:
        """Until `timeout`: sshd on the node answers with the node's precomputed ed25519 key."""
        key = self.identity.host_keys(node.name)["ed25519"].public_key
        start = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            self._check()
            try:
                fp = host_key_probe(node.address, key)
                return ProbeResult(
                    node.name, "ssh host key", True, time.monotonic() - start, fp, attempts
                )
            except BackendError as e:
                if time.monotonic() - start > timeout:
                    raise ProbeError(
                        f"{node.name}: probe 'ssh host key' failed after {attempts} attempts: "
                        f"{e.message}"
                    ) from None
            time.sleep(2.0)
