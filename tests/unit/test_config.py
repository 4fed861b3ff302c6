"""The plex model, loader and checks: shipped plexes, defaults, lookup, rules the corpus skips."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from plex.errors import ConfigErrors, UsageError
from plex.model.plex import Addressing, Cni, Engine, Plex, Role, Virt
from plex.plexfile.checks import check_plex, warnings
from plex.plexfile.load import find_plex, load_plex, parse_plex

PLEXES = Path(__file__).resolve().parents[2] / "plexes"
SHIPPED = sorted(PLEXES.glob("*.yaml"))

MINIMAL = """\
name: t
incus: {project: p}
network: {cidr: 10.0.0.0/24}
roles:
  server: {count: 1, offset: 21}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        parse_plex(text, "F")
    return [e.message for e in exc.value.errors]


def test_the_three_shipped_plexes_are_found() -> None:
    assert [p.stem for p in SHIPPED] == ["demo", "omniplex", "verniplex"]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_plexes_load_without_problems(path: Path) -> None:
    plex = load_plex(path)
    assert plex.name == path.stem
    assert plex.source == str(path)
    assert check_plex(plex) == []


def test_demo_fields() -> None:
    demo = load_plex(PLEXES / "demo.yaml")
    assert demo.incus.project == "plex-demo"
    assert demo.network.addressing is Addressing.DHCP
    assert demo.registry.engine is Engine.DISTRIBUTION
    assert demo.kubernetes.cni is Cni.CANAL
    assert [(r, rc.count, rc.offset) for r, rc in demo.roles.items()] == [
        (Role.REGISTRY, 1, 5),
        (Role.LB, 2, 11),
        (Role.SERVER, 3, 21),
        (Role.AGENT, 2, 31),
    ]


def test_minimal_plex_gets_the_documented_defaults() -> None:
    plex = parse_plex(MINIMAL)
    assert plex.incus.remote == "local"
    assert plex.incus.verify is True
    assert plex.network.domain == "plex.internal"
    assert plex.network.addressing is Addressing.STATIC
    assert plex.os.virt is Virt.CONTAINER
    assert plex.kubernetes.version == "v1.31.4+rke2r1"
    assert plex.kubernetes.channel is None
    assert [u.name for u in plex.registry.upstreams] == ["docker.io"]
    assert plex.reboot_windows.slots == (3,)
    assert [r for r, _ in plex.roles.items()] == [Role.SERVER]
    assert plex.roles.get(Role.AGENT) is None


def test_role_os_overrides_the_plex_os() -> None:
    omni = load_plex(PLEXES / "omniplex.yaml")
    assert omni.os_for(Role.SERVER).virt is Virt.VM
    assert omni.os_for(Role.LB).virt is Virt.CONTAINER
    assert omni.os_for(Role.LB).base == "debian-bookworm"
    assert omni.os_for(Role.AGENT).base == "opensuse-microos"


def test_plex_is_frozen() -> None:
    plex = parse_plex(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        plex.name = "other"  # type: ignore[misc]


def test_channel_alone_is_accepted() -> None:
    plex = parse_plex(MINIMAL + "kubernetes: {version: null, channel: stable}\n")
    assert (plex.kubernetes.version, plex.kubernetes.channel) == (None, "stable")


@pytest.mark.parametrize("verify", ["true", "false", "/etc/plex/ca.pem"])
def test_incus_verify_takes_a_bool_or_a_ca_path(verify: str) -> None:
    text = MINIMAL.replace("{project: p}", f"{{project: p, verify: {verify}}}")
    assert parse_plex(text).incus.verify == yaml.safe_load(verify)


def test_every_problem_of_one_file_is_reported_at_once() -> None:
    text = MINIMAL.replace("10.0.0.0/24}", "10.0.0.0/24, gateway: 10.1.0.1, dns: [x]}")
    text += "kubernetes: {version: v1.31.4+rke2r1, cluster_cidr: 10.0.0.0/8}\n"
    assert errors_of(text) == [
        "F:3: network.gateway: 10.1.0.1 is outside 10.0.0.0/24",
        "F:3: network.dns[0]: 'x' is not an IP address",
        "F:6: kubernetes.cluster_cidr: 10.0.0.0/8 overlaps the node network 10.0.0.0/24",
    ]


def test_type_errors_are_all_reported_with_their_lines() -> None:
    text = MINIMAL.replace("count: 1", "count: one, cpu: []") + "colour: red\n"
    assert errors_of(text) == [
        "F:5: roles.server.count: input should be a valid integer, unable to parse string as "
        "an integer (got string 'one')",
        "F:5: roles.server.cpu: input should be a valid integer (got list [])",
        "F:6: colour: unknown key",
    ]


def test_missing_top_level_sections_have_no_line_to_point_at() -> None:
    assert errors_of("name: t\n") == [
        "F: incus: required key is missing",
        "F: network: required key is missing",
        "F: roles: required key is missing",
    ]


def test_plain_yaml_aliases_still_work() -> None:
    text = MINIMAL.replace("roles:\n", "os: &os {virt: vm}\nroles:\n")
    text = text.replace("offset: 21}", "offset: 21, os: *os}")
    plex = parse_plex(text)
    assert plex.os_for(Role.SERVER).virt is Virt.VM


def test_an_ipv6_node_network_works() -> None:
    text = MINIMAL.replace("10.0.0.0/24", "fd42:77::/64")
    plex = parse_plex(text)
    assert plex.network.cidr == "fd42:77::/64"


def test_tiny_network_counts_its_usable_hosts() -> None:
    # A /29 has hosts 1..6: 6 nodes fit from host 1, a 7th does not.
    text = MINIMAL.replace("10.0.0.0/24", "10.0.0.0/29").replace("offset: 21", "offset: 1")
    assert parse_plex(text.replace("count: 1", "count: 5")).roles.server.count == 5
    assert errors_of(text.replace("count: 1", "count: 7")) == [
        "F:5: roles.server.count: 7 nodes from host 1 do not fit in 10.0.0.0/29 (room for 6)"
    ]


def test_a_role_with_zero_nodes_takes_no_addresses() -> None:
    text = MINIMAL + "  agent: {count: 0, offset: 21}\n"
    assert parse_plex(text).roles.agent is not None


def test_warnings_are_not_errors() -> None:
    plex = parse_plex(MINIMAL.replace("count: 1", "count: 2"))
    assert [(w.path, w.severity) for w in warnings(plex)] == [("roles.server.count", "warning")]
    assert [p for p in check_plex(plex) if p.severity == "error"] == []


def test_load_plex_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such plex file"):
        load_plex(tmp_path / "nope.yaml")


def test_load_plex_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigErrors, match="cannot read"):
        load_plex(path)


def test_find_plex_resolves_names_and_keeps_paths() -> None:
    assert find_plex("demo", PLEXES) == PLEXES / "demo.yaml"
    assert find_plex("some/where.yaml") == Path("some/where.yaml")
    assert find_plex("x.yml") == Path("x.yml")


def test_find_plex_lists_known_plexes_for_an_unknown_name() -> None:
    with pytest.raises(UsageError) as exc:
        find_plex("nosuch", PLEXES)
    assert "no plex named 'nosuch'" in exc.value.message
    assert exc.value.hint == "known plexes: demo, omniplex, verniplex"


def test_find_plex_uses_plex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plexes").mkdir()
    (tmp_path / "plexes" / "lab.yml").write_text(MINIMAL)
    monkeypatch.setenv("PLEX_HOME", str(tmp_path))
    assert find_plex("lab") == tmp_path / "plexes" / "lab.yml"


def test_plex_model_round_trips_through_its_own_dump() -> None:
    demo = load_plex(PLEXES / "demo.yaml")
    again = Plex.model_validate(demo.model_dump(mode="json"))
    assert again == demo.model_copy(update={"source": ""})
