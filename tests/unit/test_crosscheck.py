"""Plexes against each other (`plex validate a.yaml b.yaml`) and against the live network."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.model import topology
from plex.model.plex import Plex
from plex.plexfile.crosscheck import Neighbour, live_collisions
from plex.plexfile.load import load_plex
from plex.services.validate import validate

ROOT = Path(__file__).resolve().parents[2]


def demo_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def test_a_copy_on_the_same_bridge_is_refused_naming_both_files_and_lines(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", demo_data())
    other = demo_data()
    other["incus"]["project"] = "another-project"  # projects do not separate DNS names
    b = write(tmp_path / "b.yaml", other)
    errors = validate([a, b], ROOT).errors
    got = {e.path: e for e in errors}
    assert set(got) == {"network.cidr", "network.vip", "network.virtual_router_id", "name"}
    for path, key in (
        ("network.cidr", "cidr:"),
        ("network.vip", "vip:"),
        ("network.virtual_router_id", "virtual_router_id:"),
        ("name", "name:"),
    ):
        e = got[path]
        assert e.file == str(b) and e.line == line_of(b, key), e.message
        assert f"{a}:{line_of(a, key)}" in e.message, e.message
    assert "Incus DNS names are per network" in got["name"].message


def test_a_second_plex_with_its_own_cidr_vip_router_id_and_name_passes(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", demo_data())
    other = demo_data()
    other["name"] = "lab"
    other["incus"]["project"] = "lab"
    other["network"].update(
        {
            "cidr": "10.77.1.0/24",
            "gateway": "10.77.1.1",
            "vip": "10.77.1.10",
            "virtual_router_id": 78,
            "dns": ["10.77.1.1"],
        }
    )
    b = write(tmp_path / "b.yaml", other)
    assert validate([a, b], ROOT).errors == []


def test_overlapping_cidrs_with_different_prefixes_are_caught(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", demo_data())
    other = demo_data()
    other["name"] = "half"
    other["network"].update(
        {
            "cidr": "10.77.0.128/25",
            "gateway": "10.77.0.129",
            "vip": "10.77.0.170",
            "virtual_router_id": 79,
            "dns": ["10.77.0.129"],
        }
    )
    for role, off in (("registry", 5), ("lb", 11), ("server", 21), ("agent", 31)):
        other["roles"][role]["offset"] = off
    b = write(tmp_path / "b.yaml", other)
    errors = validate([a, b], ROOT).errors
    assert [e.path for e in errors] == ["network.cidr"]
    assert "10.77.0.128/25 overlaps 10.77.0.0/24 of plex 'demo'" in errors[0].message


def test_the_same_names_on_different_networks_are_fine(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", demo_data())
    other = demo_data()
    other["incus"]["network"] = "plexbr9"
    b = write(tmp_path / "b.yaml", other)
    assert validate([a, b], ROOT).errors == []


def test_the_shipped_plexes_do_not_collide() -> None:
    assert validate(sorted((ROOT / "plexes").glob("*.yaml")), ROOT).errors == []


@pytest.fixture
def demo() -> Plex:
    return load_plex(ROOT / "plexes" / "demo.yaml")


def test_live_dns_name_in_another_project_collides(demo: Plex) -> None:
    taken = Neighbour("someone-else", "demo-server1", (), None)
    [msg] = live_collisions(demo, [taken])
    assert msg == (
        "project 'someone-else' (not plex-owned) on network plexbr0: node name demo-server1 "
        "taken (Incus DNS names are per network)"
    )


def test_live_address_and_vip_holders_collide(demo: Plex) -> None:
    got = live_collisions(
        demo,
        [
            Neighbour("other", "web", ("10.77.0.21",), "lab"),
            Neighbour("default", "router", ("10.77.0.10",), None),
        ],
    )
    assert got == [
        "project 'other' (plex 'lab') on network plexbr0: address 10.77.0.21 (demo-server1) by "
        "web in use",
        "project 'default' (not plex-owned) on network plexbr0: address 10.77.0.10 (the VIP) by "
        "router in use",
    ]


def test_a_whole_plex_in_another_project_is_one_sentence_naming_each_collision(
    demo: Plex,
) -> None:
    # What a killed test session left (CI at 4896df3): the same plex deployed in its project.
    left = [
        Neighbour("plex-test-c07f747b", n.name, (n.address,), "demo") for n in topology.nodes(demo)
    ]
    lb1 = next(i for i, nb in enumerate(left) if nb.name == "demo-lb1")
    left[lb1] = dataclasses.replace(left[lb1], addresses=("10.77.0.11", "10.77.0.10"))  # + VIP
    [msg] = live_collisions(demo, left)
    names = ", ".join(sorted(n.name for n in topology.nodes(demo)))
    assert msg.startswith(
        f"project 'plex-test-c07f747b' (plex 'demo') on network plexbr0: node names {names} "
        "taken (Incus DNS names are per network); addresses 10.77.0.5 (demo-registry1), "
        "10.77.0.10 (the VIP) by demo-lb1, 10.77.0.11 (demo-lb1), "
    )
    assert msg.endswith("10.77.0.32 (demo-agent2) in use")
    assert msg.count("10.77.0.") == len(left) + 1


def test_the_plex_s_own_nodes_are_not_collisions(demo: Plex) -> None:
    own = [
        Neighbour("plex-demo", "demo-lb1", ("10.77.0.11", "10.77.0.10"), "demo"),
        Neighbour("plex-demo", "demo-server1", ("10.77.0.21",), "demo"),
    ]
    assert live_collisions(demo, own) == []
    # The same plex name deployed from another project is another plex: it collides.
    assert live_collisions(demo, [Neighbour("copy", "demo-lb1", ("10.77.0.11",), "demo")])
