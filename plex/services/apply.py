"""Run a plan: waves in order, the nodes of a wave in parallel, probes gating the next wave.

For each node: drain (when the plan says so), delete, create from the exact image fingerprint,
push the node's private files from the identity (host keys, join token, VRRP password;
0600, checked), start, pass the role's probes, then mark
it ready (`user.plex.ready`). A node without that mark is an unfinished deploy: the next plan
replaces it, so a deploy killed anywhere is finished by simply deploying again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from plex.backends.incus import Incus
from plex.deploy.plan import Action, Plan, Verb
from plex.deploy.probes import KUBECONFIG, KUBECTL, ProbeResult, ProbeSet, probe_node, probe_vip
from plex.deploy.spec import InstanceSpec, registry_volume
from plex.errors import BackendError, Interrupted, PlexError
from plex.model import owner, topology
from plex.model.identity import Identity
from plex.model.plex import Plex, Role
from plex.plexfile.bootstrap import MANIFESTS_DIR
from plex.services.balancers import Balancers
from plex.services.push import push_checked
from plex.services.registry_secrets import push_credentials

Report = Callable[[str, str], None]  # (node, what is happening)


@dataclass
class WaveReport:
    index: int
    nodes: list[str]
    seconds: float = 0.0
    probes: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"wave": self.index, "nodes": self.nodes, "seconds": round(self.seconds, 2),
                "probes": [p.to_json() for p in self.probes]}


@dataclass
class ApplyResult:
    waves: list[WaveReport]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "waves": [w.to_json() for w in self.waves]}


class Applier:
    def __init__(self, plex: Plex, incus: Incus, identity: Identity, probes: ProbeSet,
                 parallel: int = 8, report: Report | None = None, deploy_id: str = "") -> None:
        self.plex = plex
        self.incus = incus
        self.identity = identity
        self.probes = probes
        self.parallel = max(1, parallel)
        self.report: Report = report or (lambda node, msg: None)
        self.deploy_id = deploy_id
        self.cancel = threading.Event()
        self.lbs = Balancers(plex, incus, self.report)

    def _check(self) -> None:
        if self.cancel.is_set():
            raise Interrupted("deploy cancelled")

    def apply(self, plan: Plan) -> ApplyResult:
        start = time.monotonic()
        reports: list[WaveReport] = []
        try:
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
        doomed = [a.node for a in plan.actions
                  if a.verb is Verb.REPLACE and a.cascade_from and a.node != plan.cascade_from]
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
            rep.probes.append(probe_vip(self.incus, self.plex))
        rep.seconds = time.monotonic() - t0
        return rep

    # -- one node --------------------------------------------------------------------------

    def node(self, action: Action) -> list[ProbeResult]:
        name = action.node
        if action.role is Role.SERVER:
            # Out of rotation before it goes away (or, new, until its probes pass).
            self.lbs.maint([name])
        if action.verb in (Verb.REPLACE, Verb.DELETE):
            if action.drain:
                self.drain(name)
            self.report(name, "delete")
            self.incus.delete_instance(name)
        if action.verb is Verb.DELETE:
            self.report(name, "deleted")
            return []
        assert action.spec is not None
        self._check()
        self.create(action.spec, action.generation)
        self._check()
        # Upstream logins never go into an image: they are pushed to each new registry node
        # (0600/0640, checked) from the credentials file outside git.
        if action.spec.role is Role.REGISTRY and push_credentials(self.plex, self.incus, name):
            self.report(name, "credentials")
        self.report(name, "probes")
        node = topology.resolve(self.plex, name)
        results = probe_node(self.incus, self.plex, node, self.identity, self.probes,
                             cancelled=self.cancel.is_set)
        if action.role is Role.SERVER:
            self.lbs.ready([name])
        self.incus.set_config(name, {owner.READY: "true"})
        self.report(name, "ready")
        return results

    def create(self, spec: InstanceSpec, generation: int) -> None:
        name = spec.name
        if spec.role is Role.REGISTRY:
            # The cache volume outlives the instance: reset and destroy keep it.
            self.incus.ensure_volume(self.plex.incus.pool, registry_volume(self.plex),
                                     {"size": self.plex.registry.cache_size},
                                     target=spec.target)
        config = {**spec.config, owner.GENERATION: str(generation),
                  owner.DEPLOY: self.deploy_id, owner.CREATED: str(int(time.time()))}
        self.report(name, "create")
        self.incus.create_instance(name, image=spec.image, config=config, devices=spec.devices,
                                   profiles=list(spec.profiles), virt=spec.type,
                                   target=spec.target)
        self.push_private_files(name, spec.role)
        self.push_manifests(spec)
        self.report(name, "start")
        self.incus.start(name)

    def push_private_files(self, name: str, role: Role) -> None:
        """The node's own secrets (Identity.private_files: host keys, node password, join
        token, VRRP password), pushed into the stopped instance before first boot; every
        private file's mode is read back, since a leaked mode is a leaked secret. Images and
        artifacts hold none of them."""
        made: set[str] = set()
        for f in self.identity.private_files(name, role):
            parent = f.path.rsplit("/", 1)[0]
            if parent not in made:
                self.incus.make_dirs(name, parent)
                made.add(parent)
            if f.mode & 0o077:
                self.incus.push_file(name, f.path, f.data, mode=f.mode)  # public (.pub)
            else:
                push_checked(self.incus, name, f.path, f.data, f.mode)

    def push_manifests(self, spec: InstanceSpec) -> None:
        """Bootstrap manifests into RKE2's auto-deploy directory, before the server's first
        start: the cluster applies them itself (plex.bootstrap)."""
        if not spec.manifests:
            return
        self.report(spec.name, f"{len(spec.manifests)} bootstrap manifest(s)")
        self.incus.make_dirs(spec.name, MANIFESTS_DIR)
        for m in spec.manifests:
            # 0600 like RKE2's own config: manifests may carry secrets (a Git deploy key).
            self.incus.push_file(spec.name, m.path, m.data, mode=0o600)

    def drain(self, name: str) -> None:
        """Drain and remove a kube node from a live cluster, from the master (best effort)."""
        master = topology.master(self.plex).name
        if master == name:
            return
        self.report(name, "drain")
        base = [KUBECTL, "--kubeconfig", KUBECONFIG]
        try:
            res = self.incus.exec(master, [*base, "drain", name, "--ignore-daemonsets",
                                           "--delete-emptydir-data", "--timeout=120s"])
            if res.returncode == 0:
                self.incus.exec(master, [*base, "delete", "node", name])
            else:
                self.report(name, f"drain failed: {res.output[-120:]}")
        except BackendError as e:
            # The master may be gone (it is being replaced too): nothing left to drain from.
            self.report(name, f"drain skipped: {e.message}")
