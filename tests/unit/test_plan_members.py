"""Planning on a cluster with a member down: its nodes are kept, named, and never touched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from plex.deploy.plan import Verb, make_plan, simulate_apply
from plex.model.image import ImageRef
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex

ROOT = Path(__file__).resolve().parents[2]
WHY = "Offline: No heartbeat since 31s"


def setup() -> tuple[Plex, dict[Role, ImageRef], Observed]:
    data = yaml.safe_load((ROOT / "plexes" / "omniplex.yaml").read_text())
    plex = parse_plex(yaml.safe_dump(data), "omniplex.yaml")
    images = {r: ImageRef(r, f"d-{r.value}", f"fp-{r.value}", f"omniplex/{r.value}") for r in Role}
    empty = Observed(plex.name, plex.incus.project, members={"alpha": "", "beta": "", "gamma": ""})
    return plex, images, simulate_apply(make_plan(plex, images, empty), empty)


def lose(observed: Observed, member: str) -> Observed:
    instances = {
        n: dataclasses.replace(i, status="Error") if i.location == member else i
        for n, i in observed.instances.items()
    }
    return dataclasses.replace(
        observed, instances=instances, members={**observed.members, member: WHY}
    )


def test_nodes_on_a_lost_member_are_kept_and_named_with_why() -> None:
    plex, images, healthy = setup()
    assert make_plan(plex, images, healthy).empty
    observed = lose(healthy, "gamma")
    plan = make_plan(plex, images, observed)
    lost = {n for n, i in observed.instances.items() if i.location == "gamma"}
    assert lost == {"omniplex-lb2", "omniplex-server3", "omniplex-agent3", "omniplex-agent6"}
    assert plan.unreachable == dict.fromkeys(lost, f"member gamma is {WHY}")
    for n in lost:
        a = plan.action(n)
        assert a.verb is Verb.KEEP and a.reason == f"unreachable: member gamma is {WHY}"
    assert plan.empty
    assert any("not touched, unreachable" in note for note in plan.notes)
    assert plan.to_json()["unreachable"] == plan.unreachable


def test_other_changes_still_happen_but_never_on_the_lost_member() -> None:
    plex, images, healthy = setup()
    observed = lose(healthy, "gamma")
    newer = {**images, Role.AGENT: ImageRef(Role.AGENT, "d-agent-2", "fp2", "omniplex/agent")}
    plan = make_plan(plex, newer, observed)
    changed = {a.node for w in plan.waves for a in w}
    assert changed == {"omniplex-agent1", "omniplex-agent2", "omniplex-agent4", "omniplex-agent5"}


def test_a_lost_master_does_not_cascade_the_cluster_away() -> None:
    plex, images, healthy = setup()
    plan = make_plan(plex, images, lose(healthy, "alpha"))  # alpha holds server1, the master
    assert plan.cascade_from is None and plan.empty
    assert "omniplex-server1" in plan.unreachable
