"""The cluster-side steps of a deploy, run inside a healthy server: drain and delete a node
before it goes, and after a server wave check that etcd's members are exactly the servers."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from plex.backends.incus.protocol import Incus
from plex.deploy import etcd
from plex.deploy.copies import node_copies
from plex.errors import BackendError
from plex.model.plex import Plex
from plex.services.apply_result import Report
from plex.services.cluster import Cluster, ClusterError


@dataclass
class KubeSteps:
    plex: Plex
    incus: Incus
    report: Report
    # --force: a failed drain or node deletion is reported and skipped, not fatal.
    force: bool = False
    cluster: Cluster = field(init=False)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.cluster = Cluster(self.plex, self.incus)

    def _skip(self, name: str, what: str, error: str, hint: str) -> None:
        """A cluster step failed: stop the wave, or with --force say what was skipped."""
        if self.force:
            self.report(name, f"{what} failed, skipped (--force): {error}")
            return
        raise ClusterError(f"{name}: {what} failed: {error}", hint=hint)

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

    def old_member_gone(self, name: str, grace: float = 0.0, timeout: float = 60.0) -> None:
        """Before server `name` joins with an empty data dir: no etcd member of its node may be
        left from an earlier life. RKE2 refuses a join while one is ("duplicate node name
        found") and restarts only 5 s later. Deleting the Node removes it (RKE2's member
        controller, given `grace` seconds); one still there (a lost server recreated, RKE2 not
        done) is removed here, retried while etcd refuses; after `timeout` the wave stops
        unless --force."""
        server = self.cluster.healthy_server(exclude=[name])
        if server is None:
            return  # nothing to ask; the join itself will say
        start = time.monotonic()
        error = "it is still there"
        while True:
            try:
                old = [m for m in self.cluster.members(server) if m.node([name])]
                if not old:
                    return
                if time.monotonic() - start >= grace:
                    for m in old:
                        self.report(
                            name, f"remove its old etcd member {m.name or m.id} (on {server})"
                        )
                        self.cluster.remove_member(server, m)
            except (ValueError, BackendError) as e:
                error = str(e)[-200:]  # etcd refused (unhealthy cluster) or is busy: again
            if time.monotonic() - start > timeout:
                self._skip(
                    name,
                    "removing its old etcd member",
                    error,
                    hint=f"plex status {self.plex.name}; --force replaces it anyway",
                )
                return
            self.sleep(0.5)

    def check_etcd_members(self, unborn: Collection[str] = ()) -> set[str]:
        """After a server wave: etcd's members must be exactly the plex's existing servers. A
        stale member (a server gone without removal) is removed; anything else stops here.
        `unborn`: servers created but not started yet (a cascade's next servers, waiting for
        their turn): not members yet. Returns the members."""
        observed = self.incus.observe(self.plex.name)
        servers = self.cluster.servers()
        # Servers with a copy, live or on a member that is down (an evacuated copy is not
        # named after its node; a lost one keeps its etcd member until it is evacuated).
        copies = node_copies(observed, servers)
        existing = {n for n, c in copies.items() if c.current is not None} - set(unborn)
        expected = {s for s in servers if s in existing}
        server = self.cluster.healthy_server(observed=observed)
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
        if check.unstarted or check.missing or check.learners:
            what = [f"missing {', '.join(check.missing)}"] if check.missing else []
            peers = [u for m in check.unstarted for u in m.peer_urls]
            what += [f"added but never started: {', '.join(peers)}"] if peers else []
            learners = [m.node(servers) or m.name for m in check.learners]
            what += [f"not promoted from learner: {', '.join(learners)}"] if learners else []
            raise ClusterError(
                f"etcd members are not the plex's servers: {'; '.join(what)}",
                hint=f"plex status {self.plex.name}",
            )
        self.report("etcd", f"members: {', '.join(sorted(expected))}")
        return expected
