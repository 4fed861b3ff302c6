"""`--evacuate`: nodes of a member that is down are re-created elsewhere under another instance
name; when the member is back their stale copies go first and the nodes return home."""

from __future__ import annotations

import dataclasses

import pytest

from plex.deploy.copies import instance_name, node_copies, node_of
from plex.deploy.plan import Verb, make_plan, simulate_apply
from plex.errors import PlanRefused, UsageError
from plex.model import owner
from plex.model.observed import Observed, ObservedInstance
from tests.unit.test_plan_members import WHY, setup

LOST = {"omniplex-lb2", "omniplex-server3", "omniplex-agent3", "omniplex-agent6"}  # on gamma


def down(observed: Observed, member: str) -> Observed:
    """`member` down as Incus shows it: its instances in Error, without their config."""
    instances = {
        n: dataclasses.replace(i, status="Error", config={owner.PLEX: i.config[owner.PLEX]})
        if i.location == member
        else i
        for n, i in observed.instances.items()
    }
    return dataclasses.replace(
        observed, instances=instances, members={**observed.members, member: WHY}
    )


def back(observed: Observed, before: Observed, member: str) -> Observed:
    """`member` online again: Incus restarted its instances (they were running)."""
    instances = {**observed.instances}
    instances.update({n: i for n, i in before.instances.items() if i.location == member})
    return dataclasses.replace(
        observed, instances=instances, members={**observed.members, member: ""}
    )


def test_without_evacuate_the_plan_says_how_to_proceed() -> None:
    plex, images, healthy = setup()
    plan = make_plan(plex, images, down(healthy, "gamma"))
    assert plan.empty and plan.unreachable.keys() == LOST
    assert any("plex deploy omniplex --evacuate" in note for note in plan.notes)


def test_evacuate_recreates_lost_nodes_on_online_members_under_new_names() -> None:
    plex, images, healthy = setup()
    plan = make_plan(plex, images, down(healthy, "gamma"), evacuate=True)
    moved = {a.node: a for a in plan.actions if a.evacuate_from}
    assert moved.keys() == LOST and not plan.unreachable
    for node, a in moved.items():
        assert a.verb is Verb.REPLACE and a.spec is not None
        assert a.evacuate_from == "gamma" and a.spec.target in ("alpha", "beta")
        assert a.spec.name == f"{node}-{a.spec.target}"
        assert a.reason == f"evacuated: member gamma is {WHY}"
        # Same node identity: its node name and MAC; kube nodes are forgotten (not drained:
        # they are unreachable) so the dead server's etcd member goes before the new joins.
        assert a.spec.config[owner.NODE] == node
        assert a.forget is (a.role is not None and a.role.is_kube) and not a.drain
        json = a.to_json()
        assert json["instance"] == a.spec.name and json["evacuate_from"] == "gamma"
    # lb2 goes where no lb is (lb1 is on beta, pinned): the VIP keeps two members apart.
    assert healthy.instances["omniplex-lb1"].location == "beta"
    lb2, server3 = moved["omniplex-lb2"].spec, moved["omniplex-server3"].spec
    assert lb2 is not None and server3 is not None
    assert lb2.target == "alpha"
    rows = {r[1]: r for r in plan.render_rows()}
    target = server3.target
    assert rows["omniplex-server3"][2] == f"replace (evacuate to {target})"
    # Nothing else changes, and the evacuated nodes stay put while gamma is down.
    assert {a.node for w in plan.waves for a in w} == LOST
    after = simulate_apply(plan, down(healthy, "gamma"))
    again = make_plan(plex, images, after, evacuate=True)
    assert again.empty, again.render_rows()
    assert any("back to their planned member once it is online" in n for n in again.notes)


def test_the_member_back_stale_copies_go_first_and_the_nodes_return_home() -> None:
    plex, images, healthy = setup()
    lost = down(healthy, "gamma")
    evacuated = simulate_apply(make_plan(plex, images, lost, evacuate=True), lost)
    returned = back(evacuated, healthy, "gamma")
    plan = make_plan(plex, images, returned)
    assert {c.instance for c in plan.stale} == LOST
    assert all(c.live == plan.action(c.node).instance and c.member == "gamma" for c in plan.stale)
    assert not plan.empty and plan.to_json()["stale"]
    home = {a.node: a for a in plan.actions if a.verb is Verb.REPLACE}
    assert home.keys() == LOST
    for node, a in home.items():
        assert a.spec is not None and a.spec.name == node and a.spec.target == "gamma"
        assert a.instance.startswith(f"{node}-") and a.reason == "back to member gamma"
    done = simulate_apply(plan, returned)
    # One instance per node, named after it, on its planned member: nothing duplicated.
    assert sorted(done.instances) == sorted(healthy.instances)
    assert {n: i.location for n, i in done.instances.items()} == {
        n: i.location for n, i in healthy.instances.items()
    }
    assert make_plan(plex, images, done).empty


def test_an_evacuated_node_copy_on_a_member_that_goes_down_maps_to_its_node() -> None:
    nodes = ["p-server1", "p-server10"]
    lost = ObservedInstance("p-server1-beta", "Error", "", {owner.PLEX: "p"}, "beta")
    assert node_of(lost, nodes) == "p-server1"
    assert node_of(dataclasses.replace(lost, name="p-server10"), nodes) == "p-server10"
    assert node_of(dataclasses.replace(lost, name="p-other"), nodes) == "p-other"
    observed = Observed("p", "p", {lost.name: lost}, members={"beta": WHY})
    assert node_copies(observed, nodes)["p-server1"].lost == (lost,)


def test_other_plexes_instances_on_the_lost_member_are_not_touched() -> None:
    plex, images, healthy = setup()
    other = ObservedInstance("x-server3", "Error", "", {owner.PLEX: "x"}, "gamma")
    observed = down(healthy, "gamma")
    observed = dataclasses.replace(observed, instances={**observed.instances, other.name: other})
    plan = make_plan(plex, images, observed, evacuate=True)
    assert "x-server3" not in {a.node for a in plan.actions} | {c.instance for c in plan.stale}


def test_evacuation_keeps_quorum_rules() -> None:
    plex, images, healthy = setup()
    two_down = down(down(healthy, "gamma"), "beta")  # server2 and server3: 1 of 3 running
    with pytest.raises(PlanRefused, match="no quorum"):
        make_plan(plex, images, two_down, evacuate=True)


def test_nowhere_to_go_and_names_too_long_are_refused() -> None:
    plex, images, healthy = setup()
    every = healthy
    for m in ("alpha", "beta", "gamma"):
        every = down(every, m)
    with pytest.raises(UsageError, match="no cluster member is online"):
        make_plan(plex, images, every, evacuate=True)
    with pytest.raises(UsageError, match="longer than 63"):
        instance_name("n" * 60, "alpha", "gamma")
    assert instance_name("n", "gamma", "gamma") == "n"
