"""plex promotes a joining server's etcd learner itself (plex.services.learner_promotion),
through another running server, retrying etcd's own "not in sync" answer."""

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
        path = argv[-1].split("2379", 1)[1]
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
