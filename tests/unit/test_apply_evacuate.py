"""Applying an evacuation over the in-memory Incus (the real cluster: test_cluster.py): lost
copies are left alone, new copies take the node's identity under their own instance names,
and stale copies go before anything else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from plex.deploy.plan import make_plan, simulate_apply
from plex.errors import BackendError
from plex.model import owner
from plex.model.identity import TOKEN_FILE, Identity
from plex.model.image import ImageRef
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex
from plex.services.apply import Applier
from plex.services.deploy import SETTLE_INTERVAL, SETTLE_TRIES, down_members, observe_settled
from plex.store.identity import ensure_identity
from tests.fixtures.fake_incus import Call, FakeIncus
from tests.unit.test_apply import PROBES, PROFILE, lab
from tests.unit.test_plan_evacuate import back, down
from tests.unit.test_plan_members import ROOT

PROFILES = dict.fromkeys(Role, PROFILE)
# The omni fixture: the plex, its images, its healthy state and its identity.
Omni = tuple[Plex, dict[Role, ImageRef], Observed, Identity]


VIP = "10.20.0.10"  # omniplex's


def hostnames(calls: list[Call]) -> dict[str, str]:
    """The hostnames pinned, each checked to come before its instance's first start."""
    pinned = {}
    for i, c in enumerate(calls):
        if c[0] == "hostname":
            assert ("start", c[1]) not in calls[:i], f"{c[1]} pinned after its first start"
            pinned[c[1]] = c[2]
    return pinned


@pytest.fixture
def omni(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Omni:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    # Containers only: a VM's probe is SSH to its address, and the fake has no nodes to answer.
    data = yaml.safe_load((ROOT / "plexes" / "omniplex.yaml").read_text())
    data["os"] = {"base": "debian-bookworm", "virt": "container"}
    plex = parse_plex(yaml.safe_dump(data), "omniplex.yaml")
    images = {r: ImageRef(r, f"d-{r.value}", f"fp-{r.value}", f"omniplex/{r.value}") for r in Role}
    members = dict.fromkeys(("alpha", "beta", "gamma"), "")
    empty = Observed(plex.name, plex.incus.project, members=members)
    healthy = simulate_apply(make_plan(plex, images, empty, profiles=PROFILES), empty)
    identity, _ = ensure_identity(plex)
    return plex, images, healthy, identity


def test_an_evacuation_creates_new_copies_and_leaves_the_lost_ones(omni: Omni) -> None:
    plex, images, healthy, identity = omni
    lost = down(healthy, "gamma")
    plan = make_plan(plex, images, lost, profiles=PROFILES, evacuate=True)
    incus = lab(lost, vip=VIP)
    Applier(plex, incus, identity, PROBES, parallel=2).apply(plan)
    moved = {a.node: a.created for a in plan.actions if a.evacuate_from}
    assert set(moved) == {"omniplex-lb2", "omniplex-server3", "omniplex-agent3", "omniplex-agent6"}
    deleted = {c[1] for c in incus.calls if c[0] == "delete"}
    assert not deleted  # Incus would refuse: the lost copies stay
    for node, inst in moved.items():
        assert inst != node and ("create", inst) in [c[:2] for c in incus.calls]
        assert hostnames(incus.calls)[inst] == node and incus.configs[inst][owner.NODE] == node
        # The node's own secrets, into its new instance; probes and readiness there too.
        assert ("config", inst, ((owner.READY, "true"),)) in incus.calls
        assert any(c[0] == "exec" and c[1] == inst for c in incus.calls)
    pushed = {(c[1], c[2]) for c in incus.calls if c[0] == "push"}
    assert (moved["omniplex-agent3"], TOKEN_FILE) in pushed
    # The dead server left the cluster before its new copy joined (from a healthy server).
    kubectl = [c for c in incus.calls if c[0] == "exec" and "delete node omniplex-server3" in c[2]]
    assert kubectl and kubectl[0][1] in ("omniplex-server1", "omniplex-server2")
    assert incus.calls.index(kubectl[0]) < incus.calls.index(
        ("create", moved["omniplex-server3"], None, "fp-server")
    )


def test_stale_copies_are_deleted_before_the_first_wave(omni: Omni) -> None:
    plex, images, healthy, identity = omni
    lost = down(healthy, "gamma")
    evacuated = simulate_apply(
        make_plan(plex, images, lost, profiles=PROFILES, evacuate=True), lost
    )
    returned = back(evacuated, healthy, "gamma")
    plan = make_plan(plex, images, returned, profiles=PROFILES)
    incus = lab(returned, vip=VIP)
    Applier(plex, incus, identity, PROBES, parallel=2).apply(plan)
    first_create = next(i for i, c in enumerate(incus.calls) if c[0] == "create")
    stale = {c.instance for c in plan.stale}
    assert {c[1] for c in incus.calls[:first_create] if c[0] == "delete"} >= stale
    # Every node back home under its own name, one instance each.
    assert set(incus.instances) == set(healthy.instances)
    assert not hostnames(incus.calls)  # no instance needs its hostname pinned at home
    assert dataclasses.asdict(plan)["stale"]


class Flapping(FakeIncus):
    """Incus right after a member died: each observation shows the next members' state."""

    def __init__(self, base: Observed, states: list[dict[str, str]]) -> None:
        super().__init__(base.project)
        held = FakeIncus.holding(base)
        self.instances, self.configs, self.aliases = held.instances, held.configs, held.aliases
        self.states = states
        self.reads = 0

    def observe(self, plex: str) -> Observed:
        self.members = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        return super().observe(plex)


def test_evacuate_plans_only_on_members_that_stayed_down(omni: Omni) -> None:
    """Right after gamma died, alpha looked down for one observation (test_cluster saw it): a
    plan made then would evacuate the master. The deploy waits for SETTLE_READS views that
    agree, and evacuates only gamma's nodes."""
    plex, _, healthy, _ = omni
    ok = dict.fromkeys(("alpha", "beta", "gamma"), "")
    gamma = {**ok, "gamma": "Offline: no heartbeat"}
    both = {**gamma, "alpha": "Offline: no heartbeat"}
    incus = Flapping(down(healthy, "gamma"), [gamma, both, gamma, gamma, gamma])
    slept: list[float] = []
    seen = observe_settled(plex, incus, sleep=slept.append)
    assert down_members(seen).keys() == {"gamma"}
    assert incus.reads == 5 and slept == [SETTLE_INTERVAL] * 4  # gamma, both, then 3 agreeing
    # Every member online: one observation, no wait.
    calm = Flapping(healthy, [ok])
    assert observe_settled(plex, calm, sleep=slept.append).members == ok and calm.reads == 1


def test_evacuate_refuses_a_cluster_that_keeps_changing(omni: Omni) -> None:
    plex, _, healthy, _ = omni
    ok = dict.fromkeys(("alpha", "beta", "gamma"), "")
    gamma = {**ok, "gamma": "Offline: no heartbeat"}
    both = {**gamma, "alpha": "Offline: no heartbeat"}
    incus = Flapping(down(healthy, "gamma"), [gamma, both] * SETTLE_TRIES)
    with pytest.raises(BackendError, match=r"cluster members keep changing state .*not evacuating"):
        observe_settled(plex, incus, sleep=lambda _: None)
    assert incus.reads == SETTLE_TRIES
    assert not [c for c in incus.calls if c[0] in ("create", "delete", "start")]
