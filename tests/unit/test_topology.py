"""plex.model.topology: node names, cidrhost addresses, master resolution, placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from plex.errors import UsageError
from plex.model import topology
from plex.model.plex import Plex, Role, Virt
from plex.plexfile.load import load_plex, parse_plex

PLEXES = Path(__file__).resolve().parents[2] / "plexes"


@pytest.fixture(scope="module")
def demo() -> Plex:
    return load_plex(PLEXES / "demo.yaml")


@pytest.fixture(scope="module")
def omni() -> Plex:
    return load_plex(PLEXES / "omniplex.yaml")


def small(roles: str, members: str = "") -> Plex:
    incus = f"{{project: p, members: [{members}]}}" if members else "{project: p}"
    return parse_plex(
        f"name: lab\nincus: {incus}\nnetwork: {{cidr: 10.9.0.0/24, vip: 10.9.0.10}}\n"
        f"roles:\n{roles}"
    )


# --- cidrhost: Terraform's semantics


@pytest.mark.parametrize(
    ("cidr", "hostnum", "address"),
    [
        ("10.77.0.0/24", 0, "10.77.0.0"),
        ("10.77.0.0/24", 21, "10.77.0.21"),
        ("10.77.0.0/24", 255, "10.77.0.255"),
        ("10.77.0.0/24", -1, "10.77.0.255"),
        ("10.77.0.0/24", -256, "10.77.0.0"),
        ("10.12.112.0/20", 16, "10.12.112.16"),  # Terraform's documented examples
        ("10.12.112.0/20", 268, "10.12.113.12"),
        ("fd00:fd12:3456:7890:00a2::/72", 34, "fd00:fd12:3456:7890::22"),
        ("10.20.0.0/22", 300, "10.20.1.44"),
        ("10.77.0.99/24", 5, "10.77.0.5"),  # host bits in the CIDR are ignored
    ],
)
def test_cidrhost(cidr: str, hostnum: int, address: str) -> None:
    assert topology.cidrhost(cidr, hostnum) == address


@pytest.mark.parametrize(
    ("cidr", "hostnum"), [("10.77.0.0/24", 256), ("10.77.0.0/24", -257), ("10.0.0.0/30", 4)]
)
def test_cidrhost_outside_the_network(cidr: str, hostnum: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        topology.cidrhost(cidr, hostnum)


# --- nodes


def test_demo_nodes_in_wave_order(demo: Plex) -> None:
    assert [(n.name, n.role, n.index, n.address) for n in topology.nodes(demo)] == [
        ("demo-registry1", Role.REGISTRY, 1, "10.77.0.5"),
        ("demo-lb1", Role.LB, 1, "10.77.0.11"),
        ("demo-lb2", Role.LB, 2, "10.77.0.12"),
        ("demo-server1", Role.SERVER, 1, "10.77.0.21"),
        ("demo-server2", Role.SERVER, 2, "10.77.0.22"),
        ("demo-server3", Role.SERVER, 3, "10.77.0.23"),
        ("demo-agent1", Role.AGENT, 1, "10.77.0.31"),
        ("demo-agent2", Role.AGENT, 2, "10.77.0.32"),
    ]


def test_names_are_plex_role_index(omni: Plex) -> None:
    for n in topology.nodes(omni):
        assert n.name == f"omniplex-{n.role.value}{n.index}"
    assert [n.name for n in topology.nodes(omni) if n.role is Role.AGENT][-1] == "omniplex-agent6"


def test_addresses_are_offset_plus_index_across_a_bigger_network(omni: Plex) -> None:
    agents = [n.address for n in topology.nodes(omni) if n.role is Role.AGENT]
    assert agents == [f"10.20.0.{41 + i}" for i in range(6)]


def test_exactly_one_master_and_it_is_server1(demo: Plex) -> None:
    masters = [n for n in topology.nodes(demo) if n.is_master]
    assert [m.name for m in masters] == ["demo-server1"]
    assert topology.master(demo).address == "10.77.0.21"


def test_virt_and_base_follow_role_overrides(omni: Plex) -> None:
    by_role = {n.role: n for n in topology.nodes(omni)}
    assert (by_role[Role.LB].virt, by_role[Role.LB].base) == (Virt.CONTAINER, "debian-bookworm")
    assert (by_role[Role.SERVER].virt, by_role[Role.SERVER].base) == (Virt.VM, "opensuse-microos")
    assert Virt.VM.incus_type == "virtual-machine"


def test_fqdn(demo: Plex) -> None:
    assert topology.master(demo).fqdn(demo.network.domain) == "demo-server1.demo.plex.internal"


def test_a_zero_count_role_has_no_nodes() -> None:
    plex = small(
        "  lb: {count: 2, offset: 11}\n  server: {count: 1, offset: 21}\n"
        "  agent: {count: 0, offset: 31}\n"
    )
    assert [n.name for n in topology.nodes(plex)] == ["lab-lb1", "lab-lb2", "lab-server1"]


def test_api_address_is_the_vip_or_the_master(demo: Plex) -> None:
    assert topology.api_address(demo) == "10.77.0.10"
    assert topology.api_name(demo) == "demo-api"
    no_vip = parse_plex(
        "name: solo\nincus: {project: p}\nnetwork: {cidr: 10.1.0.0/24}\n"
        "roles:\n  server: {count: 1, offset: 7}\n"
    )
    assert topology.api_address(no_vip) == "10.1.0.7"
    assert topology.registry_node(no_vip) is None


def test_registry_node(demo: Plex) -> None:
    reg = topology.registry_node(demo)
    assert reg is not None
    assert (reg.name, reg.address) == ("demo-registry1", "10.77.0.5")


# --- resolving a node name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("master", "demo-server1"),
        ("server1", "demo-server1"),
        ("demo-server1", "demo-server1"),
        ("lb2", "demo-lb2"),
        ("demo-agent2", "demo-agent2"),
        ("registry1", "demo-registry1"),
    ],
)
def test_resolve(demo: Plex, name: str, expected: str) -> None:
    assert topology.resolve(demo, name).name == expected


@pytest.mark.parametrize(
    "name", ["server9", "demo-server", "omniplex-server1", "", "Server1", "demo-master", "agent0"]
)
def test_resolve_unknown_name_is_a_usage_error(demo: Plex, name: str) -> None:
    with pytest.raises(UsageError) as exc:
        topology.resolve(demo, name)
    assert exc.value.message == f"plex 'demo' has no node '{name}'"
    assert exc.value.hint is not None
    assert exc.value.hint.startswith("nodes: master, demo-registry1, demo-lb1")


# --- placement


def test_no_members_means_incus_chooses(demo: Plex) -> None:
    assert {n.member for n in topology.nodes(demo)} == {None}


def test_round_robin_over_incus_members() -> None:
    plex = small(
        "  lb: {count: 2, offset: 11}\n  server: {count: 3, offset: 21}\n"
        "  agent: {count: 5, offset: 31}\n",
        members="a, b, c",
    )
    placed = {n.name: n.member for n in topology.nodes(plex)}
    assert placed == {
        "lab-lb1": "a",
        "lab-lb2": "b",
        "lab-server1": "a",
        "lab-server2": "b",
        "lab-server3": "c",
        "lab-agent1": "a",
        "lab-agent2": "b",
        "lab-agent3": "c",
        "lab-agent4": "a",
        "lab-agent5": "b",
    }


def test_role_placement_pins_one_node_per_member(omni: Plex) -> None:
    placed = {n.name: n.member for n in topology.nodes(omni)}
    assert placed["omniplex-registry1"] == "alpha"
    assert (placed["omniplex-lb1"], placed["omniplex-lb2"]) == ("beta", "gamma")
    # Roles without a placement list use incus.members round-robin.
    assert [placed[f"omniplex-server{i}"] for i in (1, 2, 3)] == ["alpha", "beta", "gamma"]
    assert [placed[f"omniplex-agent{i}"] for i in range(1, 7)] == [
        "alpha",
        "beta",
        "gamma",
        "alpha",
        "beta",
        "gamma",
    ]


def test_a_short_placement_list_is_round_robin_within_the_role() -> None:
    plex = small(
        "  lb: {count: 2, offset: 11}\n  server: {count: 3, offset: 21, placement: [c, b]}\n",
        members="a, b, c",
    )
    servers = [n.member for n in topology.nodes(plex) if n.role is Role.SERVER]
    assert servers == ["c", "b", "c"]
    assert topology.role_members(plex, Role.SERVER) == ("c", "b")
    assert topology.role_members(plex, Role.LB) == ("a", "b", "c")


def test_placement_without_incus_members_is_taken_as_is() -> None:
    plex = small("  lb: {count: 2, offset: 11, placement: [x]}\n  server: {count: 1, offset: 21}\n")
    assert [n.member for n in topology.nodes(plex)] == ["x", "x", None]
