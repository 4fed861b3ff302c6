"""The deploy planner: golden cases (JSON in, plan out), the apply round-trip, and properties.

Golden cases live in tests/unit/golden/plan/<case>/:
- input.json: {"plex": "demo", "overrides": {...deep-merged into the plex file...},
  "images": {role: digest}, "replace": [...], "force": false}
- observed.json: an `Observed` snapshot. `"{spec}"` as a user.plex.spec value stands for the
  spec digest the planner computes for that node today, so editing deploy/profiles does not
  turn the no-change cases into "spec changed" ones; a literal digest means a drifted spec.
- expected.json: Plan.to_json() with each action's spec digest written as "{spec}", or
  {"refused": message} for a plan the planner must refuse.
Regenerate expected.json with PLEX_UPDATE_GOLDEN=1, then review the diff by eye.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from plex.deploy.plan import Plan, Strategy, Verb, make_plan, simulate_apply
from plex.errors import PlanRefused, PlexError, UsageError
from plex.model import owner, topology
from plex.model.image import ImageRef
from plex.model.observed import Observed, ObservedInstance
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "plan"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.json").exists())
SPEC = "{spec}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_case_plex(name: str, overrides: dict[str, Any] | None = None) -> Plex:
    return _load_case_plex(name, json.dumps(overrides or {}, sort_keys=True))


@functools.lru_cache(maxsize=256)  # the property test builds the same few plexes many times
def _load_case_plex(name: str, overrides: str) -> Plex:
    path = REPO / "plexes" / f"{name}.yaml"
    data = _merge(yaml.safe_load(path.read_text()), json.loads(overrides))
    return parse_plex(yaml.safe_dump(data), str(path))


def images_for(plex: Plex, digests: dict[str, str]) -> dict[Role, ImageRef]:
    return {
        Role(role): ImageRef(Role(role), d, f"fp-{d}", f"{plex.name}/{role}")
        for role, d in digests.items()
    }


def current_specs(plex: Plex, images: dict[Role, ImageRef]) -> dict[str, str]:
    """The spec digest of every node today (an empty observed state plans them all)."""
    plan = make_plan(plex, images, Observed(plex.name, plex.incus.project))
    return {a.node: a.spec.digest for a in plan.actions if a.spec is not None}


def load_observed(case: Path, specs: dict[str, str]) -> Observed:
    data = json.loads((case / "observed.json").read_text())
    for name, inst in data.get("instances", {}).items():
        if inst.get("config", {}).get(owner.SPEC) == SPEC:
            # A node no longer in the plex file has no spec today: any digest will do.
            inst["config"][owner.SPEC] = specs.get(name, "spec-of-a-removed-node")
    return Observed.from_json(data)


def normalise(plan_json: dict[str, Any]) -> dict[str, Any]:
    for a in plan_json["actions"]:
        if a["spec"] is not None:
            a["spec"] = SPEC
    return plan_json


def run_case(name: str) -> tuple[Plex, dict[Role, ImageRef], Observed, dict[str, Any]]:
    case = GOLDEN / name
    inp = json.loads((case / "input.json").read_text())
    plex = load_case_plex(inp["plex"], inp.get("overrides"))
    images = images_for(plex, inp["images"])
    observed = load_observed(case, current_specs(plex, images))
    return plex, images, observed, inp


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    plex, images, observed, inp = run_case(name)
    try:
        plan = make_plan(plex, images, observed, inp.get("replace", []), inp.get("force", False))
        got: dict[str, Any] = normalise(plan.to_json())
    except PlanRefused as e:
        got = {"refused": e.message, "hint": e.hint}
    expected_file = GOLDEN / name / "expected.json"
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        expected_file.write_text(text)
    assert text == expected_file.read_text(), f"golden case {name} changed"


@pytest.mark.parametrize("name", CASES)
def test_replanning_after_apply_is_empty(name: str) -> None:
    plex, images, observed, inp = run_case(name)
    try:
        plan = make_plan(plex, images, observed, inp.get("replace", []), inp.get("force", False))
    except PlanRefused:
        plan = make_plan(plex, images, observed, inp.get("replace", []), force=True)
    after = simulate_apply(plan, observed)
    again = make_plan(plex, images, after)
    assert again.empty, again.render_rows()
    assert again.waves == ()
    assert {a.verb for a in again.actions} <= {Verb.KEEP}


@pytest.mark.parametrize("name", CASES)
def test_waves_keep_etcd_safe(name: str) -> None:
    """Whatever the case: at most one server (re)created per wave (in a cascade the master
    alone, then the other servers together: etcd admits them one at a time), master before
    other servers, servers before agents (in a cascade: agents after the master, alongside the
    other joins), stopped nodes started together first, every changing action in exactly one
    wave."""
    plex, images, observed, inp = run_case(name)
    try:
        plan = make_plan(plex, images, observed, inp.get("replace", []), inp.get("force", False))
    except PlanRefused:
        return
    in_waves = [a.node for w in plan.waves for a in w]
    assert sorted(in_waves) == sorted(a.node for a in plan.actions if a.verb.changes)
    starts = [i for i, w in enumerate(plan.waves) for a in w if a.verb is Verb.START]
    assert set(starts) <= {0}
    cascade = plan.strategy is Strategy.CASCADE
    role_rank = {Role.REGISTRY: 0, Role.LB: 1, Role.SERVER: 2, Role.AGENT: 2 if cascade else 3}
    last = -1
    for wave in plan.waves:
        creating = [a for a in wave if a.verb in (Verb.CREATE, Verb.REPLACE)]
        if not creating:
            continue
        servers = [a for a in creating if a.role is Role.SERVER]
        if cascade and len(servers) > 1:
            assert topology.master(plex).name not in {a.node for a in servers}, wave
        else:
            assert len(servers) <= 1, wave
        ranks = {role_rank[a.role] for a in creating if a.role is not None}
        assert len(ranks) == 1, wave
        assert ranks.pop() >= last
    master = topology.master(plex).name
    server_waves = [
        i
        for i, w in enumerate(plan.waves)
        for a in w
        if a.role is Role.SERVER and a.verb in (Verb.CREATE, Verb.REPLACE)
    ]
    master_waves = [
        i
        for i, w in enumerate(plan.waves)
        for a in w
        if a.node == master and a.verb is not Verb.START
    ]
    if master_waves:
        assert master_waves[0] == min(server_waves)
    agent_waves = [
        i
        for i, w in enumerate(plan.waves)
        for a in w
        if a.role is Role.AGENT and a.verb in (Verb.CREATE, Verb.REPLACE)
    ]
    if cascade and agent_waves and master_waves:
        assert min(agent_waves) == master_waves[0] + 1


# --------------------------------------------------------------------------------------------
# Specific behaviour, beyond the golden files


@pytest.fixture
def demo() -> Plex:
    return load_case_plex("demo")


V1 = {"registry": "registry-1", "lb": "lb-1", "server": "server-1", "agent": "agent-1"}


def deployed(plex: Plex, images: dict[Role, ImageRef]) -> Observed:
    return simulate_apply(
        make_plan(plex, images, Observed(plex.name, plex.incus.project)),
        Observed(plex.name, plex.incus.project),
    )


def test_fresh_plan_creates_everything_in_order(demo: Plex) -> None:
    plan = make_plan(demo, images_for(demo, V1), Observed("demo", "plex-demo"))
    # A new cluster: the other servers and the agents join as soon as the master is ready.
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-registry1"],
        ["demo-lb1"],
        ["demo-lb2"],
        ["demo-server1"],
        ["demo-server2", "demo-server3", "demo-agent1", "demo-agent2"],
    ]
    assert plan.count(Verb.CREATE) == 8
    assert not any(a.drain for a in plan.actions)
    assert plan.cascade_from is None
    assert plan.strategy is Strategy.CASCADE


def test_replace_accepts_short_names_and_master(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    short = make_plan(demo, images, observed, replace=["agent2"])
    full = make_plan(demo, images, observed, replace=["demo-agent2"])
    assert short == full
    master = make_plan(demo, images, observed, replace=["master"])
    assert master.cascade_from == "demo-server1"
    assert master.strategy is Strategy.CASCADE
    assert master.action("demo-lb1").verb is Verb.KEEP
    assert make_plan(demo, images, observed, replace=["all"]).strategy is Strategy.CASCADE


def test_replacing_the_master_by_name_rolls_it_into_the_running_cluster(demo: Plex) -> None:
    # `--replace demo-server1` names a node, not `master`: the cluster stays; only the master
    # goes, drained, and comes back as a joiner through the VIP.
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    for name in ("server1", "demo-server1"):
        plan = make_plan(demo, images, observed, replace=[name])
        assert plan.strategy is Strategy.ROLLING
        assert plan.cascade_from is None
        assert "joiner of the running cluster" in plan.why
        assert "only --replace master rebuilds the cluster" in plan.why
        assert [[(a.node, a.verb) for a in w] for w in plan.waves] == [
            [("demo-server1", Verb.REPLACE)]
        ]
        action = plan.action("demo-server1")
        assert action.join and action.drain and action.reasons == ("forced",)
    # With no other server alive there is no cluster to join: a new one, and the plan says so.
    alone = dataclasses.replace(
        observed,
        instances={
            n: dataclasses.replace(i, status="Stopped")
            if n in ("demo-server2", "demo-server3")
            else i
            for n, i in observed.instances.items()
        },
    )
    plan = make_plan(demo, images, alone, replace=["demo-server1"], force=True)
    assert plan.strategy is Strategy.CASCADE
    assert "no other server is alive" in plan.why


def test_unknown_replace_name_is_a_usage_error(demo: Plex) -> None:
    with pytest.raises(UsageError, match="no node 'server9'"):
        make_plan(demo, images_for(demo, V1), Observed("demo", "plex-demo"), replace=["server9"])


def test_missing_image_names_the_role_and_says_bake(demo: Plex) -> None:
    images = images_for(demo, {k: v for k, v in V1.items() if k != "agent"})
    with pytest.raises(UsageError, match="no image for role agent") as e:
        make_plan(demo, images, Observed("demo", "plex-demo"))
    assert e.value.hint == "run: plex bake demo"


def test_foreign_instance_with_a_node_name_blocks_the_plan(demo: Plex) -> None:
    observed = Observed(
        "demo",
        "plex-demo",
        {
            "demo-agent1": ObservedInstance("demo-agent1", "Running", "u1", {}),
        },
    )
    with pytest.raises(PlexError, match=r"'demo-agent1' .* is not a node of plex 'demo'"):
        make_plan(demo, images_for(demo, V1), observed)


def _stop(observed: Observed, *names: str) -> Observed:
    insts = dict(observed.instances)
    for name in names:
        i = insts[name]
        insts[name] = ObservedInstance(i.name, "Stopped", i.uuid, i.config)
    return Observed(observed.plex, observed.project, insts)


def test_broken_server_goes_before_a_healthy_one(demo: Plex) -> None:
    """server3 stopped, server2 forced: bringing server3 back first keeps quorum throughout."""
    images = images_for(demo, V1)
    observed = _stop(deployed(demo, images), "demo-server3")
    plan = make_plan(demo, images, observed, replace=["server2"])
    assert [[a.node for a in w] for w in plan.waves] == [["demo-server3"], ["demo-server2"]]
    assert plan.action("demo-server2").drain
    assert not plan.action("demo-server3").drain  # a stopped node cannot be drained


def test_down_servers_count_against_quorum(demo: Plex) -> None:
    """server3 is down and leaves the plex; taking server2 down too leaves 1 of 3 members."""
    images = images_for(demo, V1)
    observed = _stop(deployed(demo, images), "demo-server3")
    two = load_case_plex("demo", {"roles": {"server": {"count": 2}}})
    with pytest.raises(PlanRefused, match="wave 1 takes down demo-server2, leaving 1 of 3"):
        make_plan(two, images, observed, replace=["server2"])
    forced = make_plan(two, images, observed, replace=["server2"], force=True)
    assert forced.notes[0].startswith("forced: wave 1 takes down demo-server2")
    # Without the forced replacement the plan only removes a member that is already down.
    assert make_plan(two, images, observed).action("demo-server3").verb is Verb.DELETE


def test_no_server_is_replaced_while_etcd_lacks_quorum(demo: Plex) -> None:
    """Without quorum etcd can add no member: replacing servers cannot heal it. (Stopped
    servers that are otherwise current are started first, which restores it: see
    test_stopped_servers_start_together_before_anything_else.)"""
    images = images_for(demo, V1)
    observed = _stop(deployed(demo, images), "demo-server2", "demo-server3")
    for name in ("demo-server2", "demo-server3"):  # their spec drifted: they must be rebuilt
        observed = _with(observed, name, **{owner.SPEC: "old-spec"})
    for replace in ([], ["server2"]):
        with pytest.raises(
            PlanRefused, match=r"etcd has no quorum \(1 of 3 servers running\)"
        ) as e:
            make_plan(demo, images, observed, replace=replace)
        assert e.value.exit_code == 7 and "plex reset demo" in (e.value.hint or "")
    forced = make_plan(demo, images, observed, replace=["server2"], force=True)
    assert forced.notes[0].startswith("forced: etcd has no quorum")
    # Stopped nodes of a live cluster cannot be drained: their Nodes are deleted instead.
    assert forced.action("demo-server2").forget and not forced.action("demo-server2").drain


def test_replacing_one_of_two_servers_is_refused(demo: Plex) -> None:
    two = load_case_plex("demo", {"roles": {"server": {"count": 2}}})
    images = images_for(two, V1)
    with pytest.raises(PlanRefused, match="leaving 1 of 2 etcd members") as e:
        make_plan(two, images, deployed(two, images), replace=["server2"])
    assert e.value.exit_code == 7 and "2 servers" in (e.value.hint or "")


def test_servers_missing_from_incus_count_as_dead_members(demo: Plex) -> None:
    """Deleted behind plex's back, they may still be etcd members: 1 of 3 is no quorum."""
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    insts = {
        n: i for n, i in observed.instances.items() if n not in ("demo-server2", "demo-server3")
    }
    with pytest.raises(PlanRefused, match=r"no quorum \(1 of 3"):
        make_plan(demo, images, Observed(observed.plex, observed.project, insts))
    # One lost server of three: quorum holds, it is recreated and rejoins under its name.
    insts = {n: i for n, i in observed.instances.items() if n != "demo-server2"}
    plan = make_plan(demo, images, Observed(observed.plex, observed.project, insts))
    assert plan.action("demo-server2").verb is Verb.CREATE
    assert not plan.action("demo-server2").forget


def test_render_rows_use_terraform_symbols(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    plan = make_plan(
        load_case_plex("demo", {"roles": {"agent": {"count": 1}}}),
        images,
        observed,
        replace=["lb1"],
    )
    rows = {r[1]: r for r in plan.render_rows()}
    assert rows["demo-lb1"] == ("-/+", "demo-lb1", "replace", "forced")
    assert rows["demo-agent2"] == ("-", "demo-agent2", "delete (drain)", "not in the plex file")
    assert rows["demo-server1"][0] == "="
    fresh = make_plan(demo, images, Observed("demo", "plex-demo"))
    assert fresh.render_rows()[0] == ("+", "demo-registry1", "create", "missing")


def test_plan_json_is_stable_and_serialisable(demo: Plex) -> None:
    images = images_for(demo, V1)
    a = make_plan(demo, images, Observed("demo", "plex-demo")).to_json()
    b = make_plan(demo, images, Observed("demo", "plex-demo")).to_json()
    assert json.dumps(a) == json.dumps(b)
    assert a["summary"] == {"create": 8, "replace": 0, "start": 0, "delete": 0, "keep": 0}
    assert a["strategy"] == "cascade"


def test_generation_counts_replacements(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    for expected in (2, 3):
        plan = make_plan(demo, images, observed, replace=["agent1"])
        assert plan.action("demo-agent1").generation == expected
        observed = simulate_apply(plan, observed)
        assert observed.instances["demo-agent1"].config[owner.GENERATION] == str(expected)


# --------------------------------------------------------------------------------------------
# Property: from any mess of a state, an applied plan converges (re-plan is empty).

STATUSES = st.sampled_from(["Running", "Stopped", "Frozen", "Error"])


@st.composite
def messy_state(draw: st.DrawFn) -> tuple[Plex, Observed, list[str]]:
    servers = draw(st.integers(1, 5))
    agents = draw(st.integers(0, 3))
    lbs = draw(st.integers(1, 2))  # the VIP needs an lb
    plex = load_case_plex(
        "demo",
        {
            "roles": {
                "server": {"count": servers},
                "agent": {"count": agents, "offset": 41},
                "lb": {"count": lbs},
            }
        },
    )
    # What was deployed: a possibly bigger or smaller plex, then drifted.
    old = load_case_plex(
        "demo",
        {
            "roles": {
                "server": {"count": draw(st.integers(1, 5))},
                "agent": {"count": draw(st.integers(0, 3)), "offset": 41},
            }
        },
    )
    images = images_for(old, V1)
    base = deployed(old, images)
    insts = {}
    for name, inst in base.instances.items():
        if draw(st.booleans()) and draw(st.booleans()):
            continue  # vanished
        config = dict(inst.config)
        if draw(st.integers(0, 4)) == 0:
            config[owner.IMAGE] = "old-image"
        if draw(st.integers(0, 4)) == 0:
            config[owner.SPEC] = "old-spec"
        insts[name] = ObservedInstance(name, draw(STATUSES), inst.uuid, config)
    names = [n.name for n in topology.nodes(plex)]
    replace = draw(st.lists(st.sampled_from([*names, "master", "all"]), max_size=2))
    return plex, Observed("demo", "plex-demo", insts), replace


@settings(max_examples=150, deadline=None)
@given(messy_state())
def test_any_state_converges_after_one_apply(state: tuple[Plex, Observed, list[str]]) -> None:
    plex, observed, replace = state
    images = images_for(plex, {**V1, "agent": "agent-2"})
    try:
        plan = make_plan(plex, images, observed, replace)
    except PlanRefused:
        plan = make_plan(plex, images, observed, replace, force=True)
        assert any(n.startswith("forced:") for n in plan.notes)
    after = simulate_apply(plan, observed)
    assert make_plan(plex, images, after).empty
    assert set(after.instances) == {n.name for n in topology.nodes(plex)}
    # Outside a cascade no wave creates two servers at once (stopped ones start together).
    if plan.strategy is not Strategy.CASCADE:
        for wave in plan.waves:
            assert (
                sum(
                    1
                    for a in wave
                    if a.role is Role.SERVER and a.verb in (Verb.CREATE, Verb.REPLACE)
                )
                <= 1
            )


def test_plan_type_is_frozen(demo: Plex) -> None:
    plan: Plan = make_plan(demo, images_for(demo, V1), Observed("demo", "plex-demo"))
    with pytest.raises(AttributeError):
        plan.waves = ()  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# The command: `plex plan` against snapshot files (no daemon).


def _files(tmp_path: Path, plex: Plex, observed: Observed) -> tuple[str, str]:
    obs = tmp_path / "observed.json"
    obs.write_text(json.dumps(observed.to_json()))
    imgs = tmp_path / "images.json"
    imgs.write_text(json.dumps({r.value: i.to_json() for r, i in images_for(plex, V1).items()}))
    return str(obs), str(imgs)


def test_plan_command_json(tmp_path: Path, plex_home: Path, cli: Any, demo: Plex) -> None:
    obs, imgs = _files(tmp_path, demo, Observed("demo", "plex-demo"))
    r = cli("plan", "demo", "--observed", obs, "--images", imgs, "-o", "json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["summary"]["create"] == 8
    assert data["waves"][0] == ["demo-registry1"]


def test_plan_command_table_and_refusal(
    tmp_path: Path, plex_home: Path, cli: Any, demo: Plex
) -> None:
    obs, imgs = _files(tmp_path, demo, deployed(demo, images_for(demo, V1)))
    r = cli("plan", "demo", "--observed", obs, "--images", imgs, "--replace", "agent1")
    assert r.code == 0, r.err
    assert "-/+" in r.out and "demo-agent1" in r.out and "replace (drain)" in r.out
    assert "1 to replace" in r.err
    r = cli("plan", "demo", "--observed", obs, "--images", imgs)
    assert r.code == 0 and "no changes" in r.err
    small = tmp_path / "small.yaml"
    data = yaml.safe_load((REPO / "plexes" / "demo.yaml").read_text())
    data["roles"]["server"]["count"] = 1
    small.write_text(yaml.safe_dump(data))
    r = cli("plan", str(small), "--observed", obs, "--images", imgs)
    assert r.code == PlanRefused.exit_code
    assert "plan refused: wave 1 takes down demo-server2, demo-server3" in r.err
    assert cli("plan", str(small), "--observed", obs, "--images", imgs, "--force").code == 0


def test_plan_command_bad_files(tmp_path: Path, plex_home: Path, cli: Any, demo: Plex) -> None:
    obs, imgs = _files(tmp_path, demo, Observed("demo", "plex-demo"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"kube": {"digest": "x", "fingerprint": "y"}}')
    r = cli("plan", "demo", "--observed", obs, "--images", str(bad))
    assert r.code == 2
    assert "bad.json: kube: unknown role" in r.err
    other = tmp_path / "other.json"
    other.write_text(json.dumps(Observed("omniplex", "omniplex").to_json()))
    r = cli("plan", "demo", "--observed", str(other), "--images", imgs)
    assert r.code == 2 and "snapshot is of plex 'omniplex'" in r.err


# --------------------------------------------------------------------------------------------
# Strategies: rolling keeps the cluster, the cascade makes a new one.


def _with(observed: Observed, name: str, **config: str) -> Observed:
    inst = observed.instances[name]
    status = config.pop("status", inst.status)
    new = dataclasses.replace(inst, status=status, config={**inst.config, **config})
    return dataclasses.replace(observed, instances={**observed.instances, name: new})


def test_a_new_server_image_rolls_the_servers_and_the_master_joins(demo: Plex) -> None:
    observed = deployed(demo, images_for(demo, V1))
    plan = make_plan(demo, images_for(demo, {**V1, "server": "server-2"}), observed)
    assert plan.strategy is Strategy.ROLLING
    assert "joiner" in plan.why
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-server1"],
        ["demo-server2"],
        ["demo-server3"],
    ]
    master = plan.action("demo-server1")
    assert master.join and master.drain and master.cascade_from is None
    assert not plan.action("demo-server2").join
    assert plan.action("demo-agent1").verb is Verb.KEEP


def test_replace_master_is_the_cascade_whatever_else_is_alive(demo: Plex) -> None:
    observed = deployed(demo, images_for(demo, V1))
    plan = make_plan(demo, images_for(demo, V1), observed, replace=["master"])
    assert plan.strategy is Strategy.CASCADE and plan.cascade_from == "demo-server1"
    assert "--replace" in plan.why
    assert not any(a.join for a in plan.actions)


def test_a_master_with_no_live_peer_cascades(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    for peer in ("demo-server2", "demo-server3"):
        observed = _with(observed, peer, **{owner.READY: "false"})
    plan = make_plan(demo, images_for(demo, {**V1, "server": "server-2"}), observed)
    assert plan.strategy is Strategy.CASCADE
    assert "no other server is alive" in plan.why


def test_agents_roll_in_batches_of_max_unavailable(demo: Plex) -> None:
    four = load_case_plex("demo", {"roles": {"agent": {"count": 4}}})
    observed = deployed(four, images_for(four, V1))
    new = images_for(four, {**V1, "agent": "agent-2"})
    plan = make_plan(four, new, observed)
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-agent1"],
        ["demo-agent2"],
        ["demo-agent3"],
        ["demo-agent4"],
    ]
    plan = make_plan(four, new, observed, max_unavailable=2)
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-agent1", "demo-agent2"],
        ["demo-agent3", "demo-agent4"],
    ]
    assert "at most 2 at once" in plan.why


def test_a_stopped_master_is_started_not_replaced(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = _with(deployed(demo, images), "demo-server1", status="Stopped")
    plan = make_plan(demo, images, observed)
    assert plan.strategy is Strategy.ROLLING
    assert [[(a.node, a.verb) for a in w] for w in plan.waves] == [[("demo-server1", Verb.START)]]
    assert plan.action("demo-server1").join  # if it fails after start: replaced as a joiner
    assert plan.action("demo-agent1").verb is Verb.KEEP


def test_a_stopped_node_with_a_new_image_is_replaced(demo: Plex) -> None:
    observed = _with(deployed(demo, images_for(demo, V1)), "demo-agent1", status="Stopped")
    plan = make_plan(demo, images_for(demo, {**V1, "agent": "agent-2"}), observed)
    assert plan.action("demo-agent1").verb is Verb.REPLACE
    assert plan.action("demo-agent1").reasons[:2] == ("not running", "image changed")


def test_stopped_servers_start_together_before_anything_else(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    for name in ("demo-server1", "demo-server2", "demo-server3", "demo-agent2"):
        observed = _with(observed, name, status="Stopped")
    observed = _with(observed, "demo-agent1", **{owner.READY: "false"})
    plan = make_plan(demo, images, observed)
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-server1", "demo-server2", "demo-server3", "demo-agent2"],
        ["demo-agent1"],
    ]


def test_adding_an_agent_creates_just_it(demo: Plex) -> None:
    images = images_for(demo, V1)
    observed = deployed(demo, images)
    three = load_case_plex("demo", {"roles": {"agent": {"count": 3}}})
    plan = make_plan(three, images, observed)
    assert [(a.node, a.verb) for w in plan.waves for a in w] == [("demo-agent3", Verb.CREATE)]
    assert plan.strategy is Strategy.ROLLING
