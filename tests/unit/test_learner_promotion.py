"""A server joining etcd: plex promotes its learner itself (plex.services.learner_promotion),
through another running server, retrying etcd's own "not in sync" answer; and before it joins,
no member of its node is left from an earlier life (plex.services.kube_steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plex.backends.incus.protocol import ExecResult
from plex.deploy import etcd
from plex.model import owner
from plex.model.observed import Observed, ObservedInstance
from plex.model.plex import Plex
from plex.plexfile.load import load_plex
from plex.services.cluster import ClusterError
from plex.services.kube_steps import KubeSteps
from plex.services.learner_promotion import promote_when_in_sync
from tests.fixtures.fake_incus import FakeIncus

ROOT = Path(__file__).resolve().parents[2]
SYNC_ERROR = {"error": etcd.NOT_IN_SYNC, "message": etcd.NOT_IN_SYNC, "code": 9}


@pytest.fixture
def plex() -> Plex:
    return load_plex(ROOT / "plexes" / "demo.yaml")


def lab(*running: str) -> FakeIncus:
    return FakeIncus.holding(
        Observed(
            "demo",
            "plex-demo",
            instances={
                n: ObservedInstance(n, "Running", f"u-{n}", {owner.PLEX: "demo"}) for n in running
            },
        )
    )


class Etcd:
    """The etcd gateway as seen from server1: server2 shows up unstarted, then as a learner
    that is `lag` promotions away from being in sync."""

    def __init__(self, lag: int, unstarted: int = 1) -> None:
        self.lag, self.unstarted = lag, unstarted
        self.learner = True
        self.promotions: list[tuple[str, str]] = []

    def __call__(self, name: str, argv: list[str]) -> ExecResult:
        assert argv[0] == "curl"
        path = argv[-1].split("2382", 1)[1]
        body = json.loads(argv[argv.index("-d") + 1])
        if path == etcd.PROMOTE:
            self.promotions.append((name, body["ID"]))
            if self.lag:
                self.lag -= 1
                return ExecResult(0, json.dumps(SYNC_ERROR), "")
            self.learner = False
        joiner: dict[str, object] = {"ID": "22", "peerURLs": ["https://10.77.0.22:2380"]}
        if self.unstarted:
            self.unstarted -= 1
        else:
            joiner["name"] = "demo-server2-0a1b2c3d"
        if self.learner:
            joiner["isLearner"] = True
        members = [{"ID": "21", "name": "demo-server1-99aabbcc"}, joiner]
        return ExecResult(0, json.dumps({"members": members}), "")


def test_the_learner_is_promoted_once_etcd_says_it_is_in_sync(plex: Plex) -> None:
    incus = lab("demo-server1", "demo-server2")
    gateway = Etcd(lag=2)
    incus.on_exec = gateway
    said: list[str] = []
    slept: list[float] = []
    done = promote_when_in_sync(
        plex,
        incus,
        "demo-server2",
        until=lambda: False,
        report=lambda n, m: said.append(f"{n}: {m}"),
        sleep=slept.append,
    )
    assert done
    # Through server1 (the only other running server); twice "not in sync", then promoted.
    assert gateway.promotions == [("demo-server1", "22")] * 3
    assert said == ["demo-server2: etcd learner promoted (on demo-server1)"]
    # One look before its etcd started, two refusals: three waits.
    assert len(slept) == 3


def test_a_server_that_votes_already_is_left_alone(plex: Plex) -> None:
    incus = lab("demo-server1", "demo-server2")
    gateway = Etcd(lag=0, unstarted=0)
    gateway.learner = False  # RKE2's leader promoted it first
    incus.on_exec = gateway
    done = promote_when_in_sync(
        plex, incus, "demo-server2", until=lambda: False, report=lambda n, m: None
    )
    assert not done and gateway.promotions == []


def test_any_other_refusal_leaves_the_promotion_to_rke2(plex: Plex) -> None:
    incus = lab("demo-server1", "demo-server2")
    gateway = Etcd(lag=0, unstarted=0)

    def refuse(name: str, argv: list[str]) -> ExecResult:
        if argv[-1].endswith(etcd.PROMOTE):
            err = "etcdserver: member not found"
            return ExecResult(0, json.dumps({"error": err, "message": err}), "")
        return gateway(name, argv)

    incus.on_exec = refuse
    said: list[str] = []
    done = promote_when_in_sync(
        plex, incus, "demo-server2", until=lambda: False, report=lambda n, m: said.append(m)
    )
    assert not done
    assert said == ["etcd learner promotion left to RKE2: etcdserver: member not found"]


def test_without_another_running_server_there_is_nothing_to_promote_through(
    plex: Plex,
) -> None:
    incus = lab("demo-server2")
    incus.on_exec = Etcd(lag=0)
    assert not promote_when_in_sync(
        plex, incus, "demo-server2", until=lambda: False, report=lambda n, m: None
    )


def test_it_stops_when_the_probes_are_done(plex: Plex) -> None:
    incus = lab("demo-server1", "demo-server2")
    gateway = Etcd(lag=0, unstarted=10**6)  # never starts
    incus.on_exec = gateway
    looks: list[float] = []
    done = promote_when_in_sync(
        plex,
        incus,
        "demo-server2",
        until=lambda: len(looks) >= 3,
        report=lambda n, m: None,
        sleep=looks.append,
    )
    assert not done and len(looks) == 3 and gateway.promotions == []


# --- a server's etcd member from an earlier life (plex.services.kube_steps) -------------------


class OldMember:
    """server1's etcd gateway, listing demo-server2's member of an earlier life until it is
    removed (by plex's REMOVE, or by RKE2 on its own after `rke2_removes_after` looks)."""

    def __init__(self, rke2_removes_after: int | None = None, unhealthy: int = 0) -> None:
        self.looks, self.after, self.unhealthy = 0, rke2_removes_after, unhealthy
        self.present = True
        self.removes: list[str] = []

    def __call__(self, name: str, argv: list[str]) -> ExecResult:
        if argv[0] != "curl":
            return ExecResult(0, "ok\n", "")  # the readyz of a healthy server
        path = argv[-1].split("2382", 1)[1]
        if path == etcd.REMOVE:
            self.removes.append(json.loads(argv[argv.index("-d") + 1])["ID"])
            if self.unhealthy:
                self.unhealthy -= 1
                err = "etcdserver: unhealthy cluster"
                return ExecResult(0, json.dumps({"error": err, "message": err}), "")
            self.present = False
        else:
            self.looks += 1
            if self.after is not None and self.looks > self.after:
                self.present = False
        members = [{"ID": "21", "name": "demo-server1-99aabbcc"}]
        if self.present:
            members.append({"ID": "22", "name": "demo-server2-0a1b2c3d"})
        return ExecResult(0, json.dumps({"members": members}), "")


def steps(plex: Plex, gateway: OldMember, said: list[str]) -> KubeSteps:
    incus = lab("demo-server1")  # demo-server2 is gone from Incus (or about to be recreated)
    incus.on_exec = gateway
    kube = KubeSteps(plex, incus, lambda n, m: said.append(f"{n}: {m}"))
    kube.sleep = lambda s: None
    return kube


def test_a_lost_servers_old_member_is_removed_before_it_rejoins(plex: Plex) -> None:
    gateway = OldMember(unhealthy=1)  # etcd refuses the first removal
    said: list[str] = []
    steps(plex, gateway, said).old_member_gone("demo-server2")
    assert gateway.removes == ["22", "22"] and not gateway.present
    assert (
        said
        == ["demo-server2: remove its old etcd member demo-server2-0a1b2c3d (on demo-server1)"] * 2
    )


def test_rke2_is_given_its_grace_to_remove_the_member_of_a_deleted_node(plex: Plex) -> None:
    gateway = OldMember(rke2_removes_after=2)
    said: list[str] = []
    steps(plex, gateway, said).old_member_gone("demo-server2", grace=60)
    assert gateway.removes == [] and said == []


def test_a_member_etcd_will_not_remove_stops_the_wave(plex: Plex) -> None:
    gateway = OldMember(unhealthy=10**6)
    with pytest.raises(
        ClusterError, match="removing its old etcd member failed: etcdserver: unhealthy"
    ):
        steps(plex, gateway, []).old_member_gone("demo-server2", timeout=0)
