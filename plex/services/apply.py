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
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.backends.incus import Incus
from plex.backends.ssh import host_key_probe
from plex.deploy import etcd
from plex.deploy.cloudinit import cloud_init_config
from plex.deploy.plan import Action, Plan, Verb
from plex.deploy.probes import ProbeResult, ProbeSet, probe_node, probe_vip
from plex.deploy.spec import InstanceSpec, registry_volume
from plex.errors import BackendError, Interrupted, PlexError, ProbeError
from plex.model import owner, topology
from plex.model.identity import Identity
from plex.model.plex import Plex, Role
from plex.model.topology import Node
from plex.plexfile.bootstrap import MANIFESTS_DIR
from plex.services.balancers import Balancers
from plex.services.cluster import Cluster, ClusterError
from plex.services.push import push_checked
from plex.services.registry_secrets import push_credentials

Report = Callable[[str, str], None]  # (node, what is happening)

# RKE2 merges config.yaml.d/*.yaml in lexical order after config.yaml: a master re-created in a
# running cluster gets this drop-in at create, so it joins through the VIP like any server.
JOIN_DROPIN = "/etc/rancher/rke2/config.yaml.d/20-plex-join.yaml"


@dataclass
class WaveReport:
    index: int
    nodes: list[str]
    seconds: float = 0.0
    probes: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "wave": self.index,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 2),
            "probes": [p.to_json() for p in self.probes],
        }


@dataclass
class ApplyResult:
    waves: list[WaveReport]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "waves": [w.to_json() for w in self.waves]}


def adaptive_parallel(cpus: int | None = None, available_mib: int | None = None) -> int:
    """How many nodes to create and boot at once when the user did not say: Incus creates are
    copy-on-write clones and boots mostly wait on each other, so a host runs many at once;
    what bounds it is memory for booting systemds (about 128 MiB each) and the cores' share
    of the work (32 per core)."""
    cpus = cpus or os.cpu_count() or 1
    if available_mib is None:
        available_mib = _available_mib()
    return max(4, min(32 * cpus, available_mib // 128))


def _available_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


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
        # --force: a failed drain or node deletion is reported and skipped, not fatal.
        self.force = force
        self.cluster = Cluster(plex, incus)
        self.incus = incus
        self.identity = identity
        self.probes = probes
        self.parallel = parallel if parallel > 0 else adaptive_parallel()
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
            rep.probes.append(probe_vip(self.incus, self.plex))
        if any(a.role is Role.SERVER for a in wave):
            self.check_etcd_members()
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
        self.incus.start(name)
        self.report(name, "probes")
        try:
            results = probe_node(
                self.incus,
                self.plex,
                node,
                self.identity,
                self.probes,
                cancelled=self.cancel.is_set,
            )
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
                self.drain(name)
            elif action.forget:
                self.forget(name)
            self.report(name, "delete")
            self.incus.delete_instance(name)
        if action.verb is Verb.DELETE:
            self.report(name, "deleted")
            return []
        assert action.spec is not None
        self._check()
        self.create(action.spec, action.generation, join=action.join)
        self._check()
        # Upstream logins never go into an image: they are pushed to each new registry node
        # (0600/0640, checked) from the credentials file outside git.
        if action.spec.role is Role.REGISTRY and push_credentials(self.plex, self.incus, name):
            self.report(name, "credentials")
        self.report(name, "probes")
        node = topology.resolve(self.plex, name)
        if action.spec.type == "virtual-machine":
            # No incus-agent in the VM: its probe is SSH, pinning the node's own host key.
            results = [self.probe_ssh(node)]
        else:
            results = probe_node(
                self.incus,
                self.plex,
                node,
                self.identity,
                self.probes,
                cancelled=self.cancel.is_set,
            )
        if action.role is Role.SERVER:
            self.lbs.ready([name])
        self.incus.set_config(name, {owner.READY: "true"})
        self.report(name, "ready")
        return results

    def create(self, spec: InstanceSpec, generation: int, join: bool = False) -> None:
        name = spec.name
        if spec.role is Role.REGISTRY:
            # The cache volume outlives the instance: reset and destroy keep it.
            self.incus.ensure_volume(
                self.plex.incus.pool,
                registry_volume(self.plex),
                {"size": self.plex.registry.cache_size},
                target=spec.target,
            )
        config = {
            **spec.config,
            owner.GENERATION: str(generation),
            owner.DEPLOY: self.deploy_id,
            owner.CREATED: str(int(time.time())),
        }
        if spec.type == "virtual-machine":
            config.update(
                cloud_init_config(self.plex, self.identity, topology.resolve(self.plex, name))
            )
        self.report(name, "create")
        self.incus.create_instance(
            name,
            image=spec.image,
            config=config,
            devices=spec.devices,
            profiles=list(spec.profiles),
            virt=spec.type,
            target=spec.target,
        )
        if spec.type != "virtual-machine":
            # A VM has no incus-agent: its private files went in with cloud-init (above).
            self.push_private_files(name, spec.role)
        self.push_manifests(spec)
        if join:
            self.push_join(name)
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

    def push_join(self, name: str) -> None:
        api = topology.api_address(self.plex)
        text = (
            "# Written by plex at create: this master joins the running cluster through "
            f"the VIP.\nserver: https://{api}:9345\n"
        )
        self.report(name, "join through the VIP")
        self.incus.push_file(name, JOIN_DROPIN, text.encode(), mode=0o600)

    def _skip(self, name: str, what: str, error: str, hint: str) -> None:
        """A cluster step failed: stop the wave, or with --force say what was skipped."""
        if self.force:
            self.report(name, f"{what} failed, skipped (--force): {error}")
            return
        raise ClusterError(f"{name}: {what} failed: {error}", hint=hint)

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

    def drain(self, name: str) -> None:
        """Drain the kube node, then delete its Node (for a server RKE2 then removes its etcd
        member), from a healthy server. A failure stops the wave unless --force."""
        server = self.cluster.healthy_server(exclude=[name])
        if server is None:
            self._skip(
                name,
                "drain",
                "no healthy server to drain it from (etcd quorum?)",
                hint=f"plex status {self.plex.name}; --force replaces it undrained",
            )
            return
        self.report(name, f"drain (from {server})")
        res = self.cluster.kubectl(
            server,
            ["drain", name, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"],
        )
        if res.returncode != 0 and "not found" not in res.output.lower():
            self._skip(
                name,
                f"kubectl drain on {server}",
                res.output.strip()[-300:],
                hint="fix what blocks the drain (PodDisruptionBudgets, stuck pods), "
                "or pass --force to replace the node undrained",
            )
            return
        self.forget(name, server)

    def forget(self, name: str, server: str | None = None) -> None:
        """Delete the node's Node before its replacement joins: a node that is not running
        cannot be drained, and RKE2 keeps its etcd member (servers) until the Node goes."""
        server = server or self.cluster.healthy_server(exclude=[name])
        if server is None:
            self._skip(
                name,
                "kubectl delete node",
                "no healthy server (etcd quorum?)",
                hint=f"plex status {self.plex.name}",
            )
            return
        try:
            if self.cluster.delete_node(server, name):
                self.report(name, f"deleted from the cluster (on {server})")
        except ClusterError as e:
            self._skip(
                name,
                "kubectl delete node",
                e.message.split(" failed: ", 1)[-1],
                hint="pass --force to replace it anyway",
            )

    def check_etcd_members(self) -> None:
        """After a server wave: etcd's members must be exactly the plex's existing servers. A
        stale member (a server gone without removal) is removed; anything else stops here."""
        existing = set(self.incus.observe(self.plex.name).instances)
        servers = self.cluster.servers()
        expected = {s for s in servers if s in existing}
        server = self.cluster.healthy_server()
        if server is None:
            raise ClusterError(
                "etcd: no server answers ready after the server wave",
                hint=f"plex status {self.plex.name}",
            )
        try:
            check = etcd.check_members(self.cluster.members(server), expected, servers)
            for m in check.stale:
                self.report(m.name, f"remove stale etcd member {m.id} (on {server})")
                self.cluster.remove_member(server, m)
        except ValueError as e:
            raise ClusterError(f"etcd on {server}: {e}") from None
        if check.unstarted or check.missing:
            what = [f"missing {', '.join(check.missing)}"] if check.missing else []
            peers = [u for m in check.unstarted for u in m.peer_urls]
            what += [f"added but never started: {', '.join(peers)}"] if peers else []
            raise ClusterError(
                f"etcd members are not the plex's servers: {'; '.join(what)}",
                hint=f"plex status {self.plex.name}",
            )
        self.report("etcd", f"members: {', '.join(sorted(expected))}")
