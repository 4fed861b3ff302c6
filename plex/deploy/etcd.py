"""etcd as RKE2 runs it, seen from plex: the query plex runs on a server and what it makes of
the answer. Pure (the commands run through the Incus backend, in plex.services.cluster).

plex needs only curl on the node and etcd's JSON gateway (/v3/...), with the client
certificates RKE2's docs give etcdctl (server/tls/etcd/server-ca.crt, server-client.crt,
server-client.key). The gateway is not on the client port: RKE2's etcd serves 2379 for gRPC
alone and HTTP on https://127.0.0.1:2382 (k3s pkg/etcd listenClientHTTPURLs, since
k3s-io/k3s#8402, September 2023, for etcd-io/etcd#15402); an HTTP request on 2379 gets grpc-go's
415 "invalid gRPC request content-type" (rancher/rke2#7170, on v1.29.9).
RKE2 names a member after its node, with a suffix (`<node>-<8 hex>`); both forms are matched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

TLS = "/var/lib/rancher/rke2/server/tls/etcd"
ENDPOINT = "https://127.0.0.1:2382"  # etcd's HTTP listener on a server (see above)


def curl(path: str, body: dict[str, Any] | None = None) -> list[str]:
    """argv for one etcd gateway call on a server."""
    return [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        f"{TLS}/server-ca.crt",
        "--cert",
        f"{TLS}/server-client.crt",
        "--key",
        f"{TLS}/server-client.key",
        "-X",
        "POST",
        "-d",
        json.dumps(body or {}),
        f"{ENDPOINT}{path}",
    ]


# etcd refuses a member add or remove ("etcdserver: unhealthy cluster") until its leader has
# been connected to every voting member for HealthInterval (etcd 3.4 etcdserver/server.go:
# mayAddMember and mayRemoveMember call isConnectedFullySince(now - HealthInterval), and
# HealthInterval = 5 * time.Second). A server that has just joined makes a rolling change's next
# step fail: the old member's removal plex asks for, and the next joiner's add (RKE2 would try
# that again every second, a raft round each time); so plex waits for it instead.
HEALTH_INTERVAL = 5.0
CONNECT_MARGIN = 0.5  # from etcd's start until its peers are connected

# How long etcd has run on a node, in whole seconds (procps: `etimes`, elapsed since start).
AGE = ["ps", "-o", "etimes=", "-C", "etcd"]


def parse_age(returncode: int, stdout: str) -> int | None:
    """The youngest etcd process's age from AGE's answer; None when no etcd runs."""
    seconds = [int(x) for x in stdout.split() if x.isdigit()]
    return min(seconds) if returncode == 0 and seconds else None


def settle_wait(ages: Sequence[int]) -> float:
    """Seconds until etcd counts members of these ages (floored seconds) as connected long
    enough to take the next member change; 0 when they already are."""
    return max(0.0, HEALTH_INTERVAL + CONNECT_MARGIN - min(ages)) if ages else 0.0


MEMBERS = "/v3/cluster/member/list"
STATUS = "/v3/maintenance/status"
REMOVE = "/v3/cluster/member/remove"
# A learner's promotion to a voting member (etcdctl member promote). RKE2's etcd leader tries
# the first learner only every 15 s (k3s manageLearners); etcd refuses one not yet in sync.
PROMOTE = "/v3/cluster/member/promote"


@dataclass(frozen=True)
class Member:
    id: str
    name: str  # empty for a member added but never started
    peer_urls: tuple[str, ...] = ()
    # RKE2 adds a joining server as a learner (non-voting) until it is promoted.
    is_learner: bool = False

    def node(self, servers: Collection[str]) -> str | None:
        """The server this member is, by RKE2's naming (`<node>` or `<node>-<8 hex>`)."""
        for s in servers:
            if self.name == s or re.fullmatch(rf"{re.escape(s)}-[0-9a-f]{{8}}", self.name):
                return s
        return None


def parse_members(text: str) -> list[Member]:
    """The gateway's member list; ValueError (with etcd's own message) otherwise."""
    data = _json(text)
    return [
        Member(
            str(m["ID"]),
            str(m.get("name", "")),
            tuple(m.get("peerURLs", [])),
            bool(m.get("isLearner", False)),
        )
        for m in data.get("members", [])
    ]


def learner_of(members: Sequence[Member], server: str) -> Member | None:
    """The server's member while it is a started learner; None once it votes (or before its
    etcd has started: a member never started has no name yet)."""
    return next((m for m in members if m.is_learner and m.node([server])), None)


def votes(members: Sequence[Member], server: str) -> bool:
    return any(not m.is_learner and m.node([server]) for m in members)


# etcd's answer to a promotion of a learner whose log still lags the leader's: try again.
NOT_IN_SYNC = "can only promote a learner member which is in sync with leader"


@dataclass(frozen=True)
class Status:
    """One member's view: its ID, the leader it knows (0: none) and etcd's errors."""

    member_id: str
    leader: str
    errors: tuple[str, ...] = ()

    @property
    def has_quorum(self) -> bool:
        return self.leader not in ("", "0") and not self.errors


def parse_status(text: str) -> Status:
    data = _json(text)
    header = data.get("header", {})
    return Status(
        str(header.get("member_id", "")),
        str(data.get("leader", "0")),
        tuple(data.get("errors", [])),
    )


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(text.strip()[-300:] or "no answer from etcd") from None
    if not isinstance(data, dict):
        raise ValueError(f"unexpected answer from etcd: {text[:200]}")
    if "error" in data:
        raise ValueError(str(data.get("message") or data["error"]))
    return data


@dataclass(frozen=True)
class MemberCheck:
    """The member list against the servers that exist: what is stale, missing or half-added."""

    members: tuple[Member, ...]
    expected: frozenset[str]
    stale: tuple[Member, ...] = field(default=())
    unstarted: tuple[Member, ...] = field(default=())
    missing: tuple[str, ...] = field(default=())
    learners: tuple[Member, ...] = field(default=())  # started, not yet voting

    @property
    def ok(self) -> bool:
        return not (self.stale or self.unstarted or self.missing or self.learners)


def check_members(
    members: Sequence[Member], expected: Collection[str], servers: Collection[str]
) -> MemberCheck:
    """`expected`: the servers that must be members; `servers`: every server name of the plex
    (a member named after a server that no longer exists is stale, as is a foreign name)."""
    unstarted = tuple(m for m in members if not m.name)
    named = [m for m in members if m.name]
    stale = tuple(m for m in named if m.node(servers) not in expected)
    have = {m.node(servers) for m in named}
    missing = tuple(sorted(set(expected) - have))
    learners = tuple(m for m in named if m.is_learner and m not in stale)
    return MemberCheck(tuple(members), frozenset(expected), stale, unstarted, missing, learners)
