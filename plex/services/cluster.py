"""The live Kubernetes cluster of a plex, from its servers: kubectl and etcd queries run inside
a healthy server through the Incus backend (no routing or credentials on the plex host)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from plex.backends.incus.protocol import ExecResult, Incus
from plex.deploy import etcd
from plex.deploy.copies import live_instances
from plex.deploy.probes import KUBECONFIG, KUBECTL
from plex.errors import BackendError, PlexError
from plex.model import topology
from plex.model.observed import Observed
from plex.model.plex import Plex, Role


class ClusterError(PlexError):
    """kubectl or etcd refused what the deploy needs (the node and the error are named)."""


@dataclass
class Cluster:
    plex: Plex
    incus: Incus
    # server -> its instance when not named after it (evacuated), as last observed
    instances: dict[str, str] = field(default_factory=dict)

    def servers(self) -> list[str]:
        """The plex's server nodes (master first)."""
        return [n.name for n in topology.nodes(self.plex) if n.role is Role.SERVER]

    def running_servers(
        self, exclude: Collection[str] = (), observed: Observed | None = None
    ) -> list[str]:
        observed = observed or self.incus.observe(self.plex.name)
        # The server's instance, which is not named after it once evacuated.
        self.instances = live_instances(observed, self.servers())
        seen = observed.instances
        return [
            s
            for s in self.servers()
            if s not in exclude and s in self.instances and seen[self.instances[s]].running
        ]

    def _on(self, server: str) -> str:
        return self.instances.get(server, server)

    def kubectl(self, server: str, args: list[str]) -> ExecResult:
        return self.incus.exec(self._on(server), [KUBECTL, "--kubeconfig", KUBECONFIG, *args])

    def healthy_server(
        self, exclude: Collection[str] = (), observed: Observed | None = None
    ) -> str | None:
        """A running server whose apiserver is ready (so etcd has quorum), master first."""
        for s in self.running_servers(exclude, observed):
            try:
                res = self.kubectl(s, ["get", "--raw", "/readyz"])
            except BackendError:
                continue
            if res.returncode == 0 and res.stdout.strip() == "ok":
                return s
        return None

    def etcd_call(self, server: str, path: str, body: dict[str, Any] | None = None) -> str:
        res = self.incus.exec(self._on(server), etcd.curl(path, body))
        if res.returncode != 0:
            raise ValueError(res.output.strip()[-300:] or f"curl exited {res.returncode}")
        return res.stdout

    def members(self, server: str) -> list[etcd.Member]:
        return etcd.parse_members(self.etcd_call(server, etcd.MEMBERS))

    def status(self, server: str) -> etcd.Status:
        return etcd.parse_status(self.etcd_call(server, etcd.STATUS))

    def remove_member(self, server: str, member: etcd.Member) -> None:
        etcd.parse_members(self.etcd_call(server, etcd.REMOVE, {"ID": member.id}))

    def promote(self, server: str, member: etcd.Member) -> None:
        """A learner made a voting member; ValueError with etcd's refusal otherwise."""
        etcd.parse_members(self.etcd_call(server, etcd.PROMOTE, {"ID": member.id}))

    def delete_node(self, server: str, name: str) -> bool:
        """`kubectl delete node`; False when the cluster has no such Node. ClusterError
        with kubectl's own message otherwise."""
        res = self.kubectl(server, ["delete", "node", name])
        if res.returncode == 0:
            return True
        if "NotFound" in res.output or "not found" in res.output:
            return False
        raise ClusterError(
            f"{name}: kubectl delete node on {server} failed: {res.output.strip()[-300:]}"
        )

    def summary(self) -> dict[str, Any]:
        """etcd as the servers see it: per server member/leader/quorum, and the members."""
        per: dict[str, dict[str, Any]] = {}
        members: list[etcd.Member] = []
        ids: dict[str, str] = {}
        for s in self.running_servers():
            try:
                st = self.status(s)
            except (ValueError, BackendError) as e:
                per[s] = {"quorum": False, "leader": False, "error": str(e)[-200:]}
                continue
            ids[st.member_id] = s
            per[s] = {
                "quorum": st.has_quorum,
                "leader": st.leader == st.member_id,
                "error": "; ".join(st.errors) or None,
            }
            if st.has_quorum and not members:
                try:
                    members = self.members(s)
                except (ValueError, BackendError) as e:
                    per[s]["error"] = str(e)[-200:]
        leader = next((s for s, v in per.items() if v.get("leader")), None)
        names = [m.node(self.servers()) or m.name or f"(unstarted {m.id})" for m in members]
        learners = [m.node(self.servers()) or m.name for m in members if m.is_learner]
        for s in self.servers():
            per.setdefault(s, {"quorum": False, "leader": False, "error": "not running"})
            per[s]["member"] = s in names
        return {
            "members": names,
            "learners": learners,  # joined, not voting yet (RKE2 promotes them)
            "leader": leader,
            "quorum": any(v.get("quorum") for v in per.values()),
            "servers": per,
        }
