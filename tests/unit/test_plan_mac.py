"""Nodes made before plex set precomputed MACs (their spec digest is the one without the NIC's
`hwaddr`): the MAC alone replaces no healthy node; the plan says so and the MAC comes with
the node's next replacement. A real spec change still replaces."""

from __future__ import annotations

import dataclasses

from plex.deploy.plan import Verb, make_plan
from plex.deploy.spec import instance_spec, load_profile
from plex.model import owner, topology
from plex.model.observed import Observed
from plex.model.plex import Role
from tests.unit.test_plan import V1, deployed, images_for, load_case_plex

NODE = "demo-agent1"


def before_macs(observed: Observed, spec: str) -> Observed:
    inst = observed.instances[NODE]
    config = {**inst.config, owner.SPEC: spec}
    return dataclasses.replace(
        observed,
        instances={**observed.instances, NODE: dataclasses.replace(inst, config=config)},
    )


def test_a_node_made_before_macs_is_kept_and_told_about() -> None:
    plex = load_case_plex("demo")
    images = images_for(plex, V1)
    node = topology.resolve(plex, NODE)
    spec = instance_spec(plex, node, images[Role.AGENT], load_profile(Role.AGENT, node.virt))
    assert spec.devices["eth0"]["hwaddr"] == node.mac
    assert spec.digest_before_mac not in ("", spec.digest)
    observed = before_macs(deployed(plex, images), spec.digest_before_mac)
    plan = make_plan(plex, images, observed)
    assert plan.action(NODE).verb is Verb.KEEP and plan.empty
    (note,) = [n for n in plan.notes if "MAC" in n]
    assert note.startswith(f"{NODE}: made before plex set precomputed MACs")
    # Its next replacement (here: a new agent image) creates it with the MAC.
    newer = images_for(plex, {**V1, "agent": "agent-2"})
    again = make_plan(plex, newer, observed)
    action = again.action(NODE)
    assert action.verb is Verb.REPLACE and action.spec is not None
    assert action.spec.devices["eth0"]["hwaddr"] == node.mac
    assert not [n for n in again.notes if "MAC" in n]


def test_any_other_spec_difference_still_replaces() -> None:
    plex = load_case_plex("demo")
    images = images_for(plex, V1)
    plan = make_plan(plex, images, before_macs(deployed(plex, images), "0" * 64))
    assert plan.action(NODE).verb is Verb.REPLACE
    assert not [n for n in plan.notes if "MAC" in n]
