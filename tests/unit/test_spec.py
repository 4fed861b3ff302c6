"""Instance specs: what each role's Incus instance looks like, and what its digest covers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plex.deploy.spec import (
    InstanceSpec,
    RoleProfile,
    instance_spec,
    load_profile,
    profiles_dir,
    spec_digest,
)
from plex.errors import ConfigError, ConfigErrors
from plex.model import owner, topology
from plex.model.image import ImageRef
from plex.model.plex import Plex, Role, Virt
from plex.plexfile.load import load_plex

REPO = Path(__file__).resolve().parents[2]


def plex_file(name: str, **roles: dict[str, object]) -> Plex:
    from plex.plexfile.load import parse_plex

    path = REPO / "plexes" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    for role, over in roles.items():
        data["roles"][role] = {**data["roles"][role], **over}
    return parse_plex(yaml.safe_dump(data), str(path))


def image(role: Role, digest: str = "d1") -> ImageRef:
    return ImageRef(role, digest, f"fp-{digest}", f"demo/{role}")


def spec_of(plex: Plex, node: str, digest: str = "d1") -> InstanceSpec:
    n = topology.resolve(plex, node)
    return instance_spec(plex, n, image(n.role, digest))


@pytest.fixture
def demo() -> Plex:
    return load_plex(REPO / "plexes" / "demo.yaml")


def test_kube_container_gets_the_kubernetes_in_container_keys(demo: Plex) -> None:
    for node in ("server1", "agent2"):
        s = spec_of(demo, node)
        assert s.type == "container"
        assert s.config["security.privileged"] == "true"
        assert s.config["security.nesting"] == "true"
        modules = s.config["linux.kernel_modules"].split(",")
        assert {"overlay", "br_netfilter", "ip_vs", "xt_socket"} <= set(modules)
        raw = s.config["raw.lxc"].splitlines()
        assert "lxc.apparmor.profile=unconfined" in raw
        assert "lxc.mount.auto=proc:rw sys:rw cgroup:rw" in raw
        assert "lxc.cgroup2.devices.allow=a" in raw
        assert "lxc.cap.drop=" in raw
        assert s.devices["kmsg"] == {
            "type": "unix-char",
            "source": "/dev/kmsg",
            "path": "/dev/kmsg",
        }


def test_every_node_has_its_own_stable_locally_administered_mac(demo: Plex) -> None:
    nodes = topology.nodes(demo, reserved=True)
    macs = [n.mac for n in nodes]
    assert len(set(macs)) == len(macs)
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert len(mac.split(":")) == 6 and first & 0x02 and not first & 0x01  # local, unicast
    assert topology.resolve(demo, "demo-server2").mac == "02:f0:c9:24:99:8e"  # never changes


def test_limits_root_disk_and_nic_come_from_the_plex(demo: Plex) -> None:
    s = spec_of(demo, "server2")
    assert s.config["limits.cpu"] == "2"
    assert s.config["limits.memory"] == "4GiB"
    assert s.devices["root"] == {"type": "disk", "path": "/", "pool": "plex", "size": "20GiB"}
    assert s.devices["eth0"] == {
        "type": "nic",
        "network": "plexbr0",
        "ipv4.address": "10.77.0.22",
        "hwaddr": topology.resolve(demo, "demo-server2").mac,
        "name": "eth0",
    }
    # The keepalived VIP must not be filtered.
    assert "security.ipv4_filtering" not in s.devices["eth0"]
    assert s.profiles == ("default",)
    assert s.target is None
    assert s.image == "fp-d1"


def test_lb_and_registry_are_plain_containers(demo: Plex) -> None:
    lb = spec_of(demo, "lb1")
    assert "security.privileged" not in lb.config
    assert "raw.lxc" not in lb.config
    assert set(lb.devices) == {"root", "eth0"}
    reg = spec_of(demo, "registry1")
    # The cache volume is mounted at the engine's data root (demo runs Distribution).
    assert reg.devices["registry-cache"] == {
        "type": "disk",
        "pool": "plex",
        "source": "demo-registry-cache",
        "path": "/var/lib/docker-registry",
    }
    omni = load_plex(REPO / "plexes" / "omniplex.yaml")
    assert spec_of(omni, "registry1").devices["registry-cache"]["path"] == "/var/lib/registry"


def test_vm_nodes_get_no_container_keys_and_land_on_their_member() -> None:
    omni = load_plex(REPO / "plexes" / "omniplex.yaml")
    s = spec_of(omni, "server2")
    assert s.type == "virtual-machine"
    assert not {"security.privileged", "raw.lxc", "security.nesting"} & set(s.config)
    assert "kmsg" not in s.devices
    assert "name" not in s.devices["eth0"]  # a VM names its NIC itself
    assert s.target == "beta"
    # lb stays a container in omniplex, pinned by its placement list.
    assert spec_of(omni, "lb2").target == "gamma"


def test_ownership_keys_and_their_digests(demo: Plex) -> None:
    s = spec_of(demo, "agent1", digest="abc")
    assert s.config[owner.PLEX] == "demo"
    assert s.config[owner.ROLE] == "agent"
    assert s.config[owner.NODE] == "demo-agent1"
    assert s.config[owner.IMAGE] == "abc"
    assert s.config[owner.SPEC] == s.digest
    # The image is tracked on its own: a new image keeps the spec digest.
    assert spec_of(demo, "agent1", digest="xyz").digest == s.digest
    # Anything Incus would see differently changes it.
    more_cpu = plex_file("demo", agent={"cpu": 3})
    assert spec_of(more_cpu, "agent1").digest != s.digest
    # Volatile and ownership keys never count.
    cfg = {k: v for k, v in s.config.items() if not k.startswith(owner.PREFIX)}
    noisy = {**cfg, "volatile.uuid": "x", owner.GENERATION: "9"}
    assert spec_digest(s.type, noisy, s.devices, s.profiles, s.target) == s.digest


def test_role_config_overrides_profile_but_not_ownership(demo: Plex) -> None:
    p = plex_file(
        "demo",
        agent={
            "config": {
                "security.nesting": "false",
                "limits.memory": "3GiB",
                "linux.kernel_modules": "",
                owner.PLEX: "someone-else",
            },
            "profiles": ["gpu", "default"],
        },
    )
    s = spec_of(p, "agent1")
    assert s.config["security.nesting"] == "false"
    assert s.config["limits.memory"] == "3GiB"
    assert "linux.kernel_modules" not in s.config  # "" removes a profile key
    assert s.config[owner.PLEX] == "demo"
    assert s.profiles == ("default", "gpu")


def test_profiles_are_read_from_plex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "deploy" / "profiles"
    d.mkdir(parents=True)
    (d / "agent.yaml").write_text(
        "config: {boot.autostart: true, limits.processes: 500}\n"
        "devices: {shared: {type: disk, source: /srv, path: /srv, readonly: true}}\n"
        "vm:\n  config: {security.secureboot: false}\n"
    )
    monkeypatch.setenv("PLEX_HOME", str(tmp_path))
    assert profiles_dir() == d
    c = load_profile(Role.AGENT, Virt.CONTAINER)
    assert c == RoleProfile(
        config={"boot.autostart": "true", "limits.processes": "500"},
        devices={"shared": {"type": "disk", "source": "/srv", "path": "/srv", "readonly": "true"}},
    )
    vm = load_profile(Role.AGENT, Virt.VM)
    assert vm.config["security.secureboot"] == "false"


def test_shipped_profiles_exist_for_every_role() -> None:
    shipped = REPO / "deploy" / "profiles"
    for role in Role:
        for virt in Virt:
            load_profile(role, virt, shipped)


def test_bad_profile_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "lb.yaml").write_text("config: {}\ndevice: {}\n")
    with pytest.raises(ConfigErrors) as e:
        load_profile(Role.LB, Virt.CONTAINER, tmp_path)
    assert e.value.errors[0].file.endswith("lb.yaml")
    assert e.value.errors[0].path == "device"
    with pytest.raises(ConfigError, match=r"server\.yaml: missing role profile"):
        load_profile(Role.SERVER, Virt.CONTAINER, tmp_path)


def test_image_ref_json_round_trip() -> None:
    ref = ImageRef(Role.SERVER, "d" * 64, "f" * 64, "demo/server")
    assert ImageRef.from_json(ref.to_json()) == ref
