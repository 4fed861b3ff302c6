"""Capacity: identity, hosts and per-node files are precomputed for each role's capacity, so
scaling within it changes no existing node's image (only the lbs, when servers change)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plex.bake.context import template_context
from plex.bake.recipe import load_base_image, load_role_recipe, make_recipe
from plex.bake.render import Renderer
from plex.errors import ConfigErrors
from plex.model import topology
from plex.model.identity import Identity, compute_identity, hosts_file
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex, parse_plex
from tests.unit.test_packer_template import FixedKeyGen, fixed_artifacts

REPO = Path(__file__).resolve().parents[2]


def demo(**counts: int) -> Plex:
    data = yaml.safe_load((REPO / "plexes" / "demo.yaml").read_text())
    data["roles"]["server"]["capacity"] = 5
    for role, count in counts.items():
        data["roles"][role]["count"] = count
    return parse_plex(yaml.safe_dump(data), "demo.yaml")


def digests(plex: Plex, identity: Identity) -> dict[Role, str]:
    base = load_base_image(REPO / "images", "debian-bookworm")
    out = {}
    for role, rc in plex.roles.items():
        if not rc.count:
            continue
        role_recipe = load_role_recipe(REPO / "bake", role, plex.registry.engine)
        recipe = make_recipe(
            plex,
            role,
            role_recipe,
            base,
            Renderer(REPO / "bake" / "templates"),
            template_context(plex, identity, role),
            fixed_artifacts(plex),
        )
        out[role] = recipe.digest
    return out


def test_demo_reserves_more_nodes_than_it_runs() -> None:
    plex = load_plex(REPO / "plexes" / "demo.yaml")
    deployed = {n.name for n in topology.nodes(plex)}
    reserved = {n.name for n in topology.nodes(plex, reserved=True)}
    assert deployed < reserved
    assert "demo-agent4" in reserved and "demo-agent3" not in deployed
    assert "demo-agent4" in hosts_file(plex)


def test_adding_an_agent_within_capacity_changes_no_image() -> None:
    two, three = demo(agent=2), demo(agent=3)
    identity = compute_identity(two, None, FixedKeyGen())
    assert compute_identity(three, identity, FixedKeyGen()) == identity
    assert digests(two, identity) == digests(three, identity)


def test_adding_servers_changes_only_the_lb_image() -> None:
    three, five = demo(server=3), demo(server=5)
    identity = compute_identity(three, None, FixedKeyGen())
    before, after = digests(three, identity), digests(five, identity)
    assert {r for r in before if before[r] != after[r]} == {Role.LB}


def test_growing_the_capacity_changes_every_image() -> None:
    small = demo()
    data = yaml.safe_load((REPO / "plexes" / "demo.yaml").read_text())
    data["roles"]["agent"]["capacity"] = 5
    big = parse_plex(yaml.safe_dump(data), "demo.yaml")
    identity = compute_identity(big, compute_identity(small, None, FixedKeyGen()), FixedKeyGen())
    before, after = digests(small, identity), digests(big, identity)
    assert all(before[r] != after[r] for r in (Role.SERVER, Role.AGENT, Role.LB))


def test_capacity_below_count_and_overlapping_reserved_ranges_are_errors() -> None:
    data = yaml.safe_load((REPO / "plexes" / "demo.yaml").read_text())
    data["roles"]["agent"]["capacity"] = 1
    with pytest.raises(ConfigErrors, match=r"roles\.agent\.capacity: capacity 1 is below count 2"):
        parse_plex(yaml.safe_dump(data), "demo.yaml")
    data["roles"]["agent"]["capacity"] = 4
    data["roles"]["server"]["capacity"] = 12  # 21..32 runs into the agents' 31..34
    with pytest.raises(
        ConfigErrors,
        match=r"roles\.agent\.offset: range 31\.\.34 overlaps "
        r"role server \(21\.\.32\)",
    ):
        parse_plex(yaml.safe_dump(data), "demo.yaml")
