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

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from plex.backends.incus.protocol import Incus
from plex.backends.ssh import host_key_probe
from plex.deploy.actions import Action, Plan, Verb
from plex.deploy.probes import ProbeResult, ProbeSet, probe_node, probe_vip
from plex.errors import BackendError, Interrupted, PlexError, ProbeError
from plex.model import owner, topology
from plex.model.identity import Identity
from plex.model.plex import Plex, Role
from plex.model.topology import Node
from plex.services.apply_result import ApplyResult, Report, WaveReport
from plex.services.balancers import Balancers
from plex.services.kube_steps import KubeSteps
from plex.services.node_create import JOIN_DROPIN, NodeFactory
from plex.services.node_shell import NodeShell
from plex.services.parallelism import adaptive_parallel
from plex.services.registry_secrets import push_credentials
from plex.services.stale import delete_stale

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
        self.report: Report = report or (lambda node, msg: None)
        self.cancel = threading.Event()
        self.lbs = Balancers(plex, incus, self.report)
        self.factory = NodeFactory(plex, incus, identity, self.report, deploy_id)
        self.shell = NodeShell(plex, incus, identity)  # incus exec, or SSH for VM nodes
        # --force: a failed drain or node deletion is reported and skipped, not fatal.
        self.kube = KubeSteps(plex, incus, self.report, force)
        self.instances: dict[str, str] = {}  # node -> instance, when not named after it

    def _check(self) -> None:
        if self.cancel.is_set():
            raise Interrupted("deploy cancelled")

    def apply(self, plan: Plan) -> ApplyResult:
        start = time.monotonic()
        reports: list[WaveReport] = []
        # Nodes whose instance is not named after them (evacuated copies), for every exec.
        self.instances = {a.node: a.created for a in plan.actions if a.created != a.node}
        self.lbs.instances = self.instances
        try:
            # Stale copies first: a lost copy whose member came back holds the node's addresses.
            delete_stale(self.incus, plan.stale, self.report)
            for i, wave in enumerate(plan.waves, 1):
                self._check()
                if plan.cascade_from and any(a.node == plan.cascade_from for a in wave):
                    self.teardown_cascade(plan)
                reports.append(self.run_wave(i, wave))
        finally:
            self.cancel.set()
        return ApplyResult(reports, time.monotonic() - start)

    def teardown_cascade(self, plan: Plan) -> None:
        """Delete every node the new master will replace before it starts.

        A new master is a new cluster: old servers left running behind the VIP would take the
        joins meant for it, and old agents would keep reporting to a cluster that is gone."""
        doomed = [
            a.node
            for a in plan.actions
            if a.verb is Verb.REPLACE and a.cascade_from and a.node != plan.cascade_from
        ]
        # Every server of the old cluster leaves the lbs' rotation first: the new master's
        # joiners must reach only servers of the new cluster, each once its probes pass.
        self.lbs.maint([plan.cascade_from or "", *doomed])
        if not doomed:
            return
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(doomed))) as pool:
            for name in doomed:
                self.report(name, "delete (cascade)")
            list(pool.map(self.incus.delete_instance, doomed))

    def run_wave(self, index: int, wave: tuple[Action, ...]) -> WaveReport:
        rep = WaveReport(index, [a.node for a in wave])
        t0 = time.monotonic()
        errors: list[BaseException] = []
        results: list[list[ProbeResult]] = []
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(wave))) as pool:
            futures = [pool.submit(self.node, a) for a in wave]
            try:
                for fut in futures:
                    try:
                        results.append(fut.result())
                    except PlexError as e:
                        errors.append(e)
            finally:
                if errors:
                    # The wave failed: stop the other nodes' probes early; no next wave.
                    self.cancel.set()
        if errors:
            errors.sort(key=lambda e: isinstance(e, Interrupted))
            raise errors[0]
        for r in results:
            rep.probes.extend(r)
        if any(a.role is Role.LB and a.verb is not Verb.DELETE for a in wave):
            self.report("lb", "VIP")
            rep.probes.append(probe_vip(self.shell, self.plex, instances=self.instances))
        if any(a.role is Role.SERVER for a in wave):
            self.kube.check_etcd_members()
        rep.seconds = time.monotonic() - t0
        return rep

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
        assert action.spec is not None
        self._check()
        self.factory.create(action.spec, action.generation, join=action.join)
        self._check()
        # Upstream logins never go into an image: they are pushed to each new registry node
        # (0600/0640, checked) from the credentials file outside git.
        made = action.spec.name
        if action.spec.role is Role.REGISTRY and push_credentials(self.plex, self.incus, made):
            self.report(name, "credentials")
        self.report(name, "probes")
        node = topology.resolve(self.plex, name)
        if action.spec.type == "virtual-machine":
            # No incus-agent in the VM: wait for sshd with the node's own host key, then run
            # the role's probes over SSH (logged in with the plex's deploy key).
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
