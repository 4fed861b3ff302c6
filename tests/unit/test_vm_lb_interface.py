"""A VM lb's keepalived names the interface its NIC really gets: cloud-init renames the NIC
matched by MAC to the plex's interface name (`set-name`), the name Incus gives a container's
NIC, and the real `keepalived -t` accepts the node's config where that interface exists (a
network namespace of this test) and refuses it where only the VM's predictable name exists."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plex.bake.packer_steps import checks_offline
from plex.bake.recipe import NODES_DIR
from plex.deploy.cloudinit import network_config
from plex.model import topology
from plex.model.identity import VRRP_AUTH_FILE
from plex.model.plex import Plex, Role, Virt
from plex.plexfile.load import load_plex
from tests.unit.test_packer_template import template_for, vm_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"plexka-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def vm_lb_plex(tmp_path: Path) -> Plex:
    """verniplex with its lbs as MicroOS VMs too (the repo's plexes keep lbs in containers)."""
    data = yaml.safe_load((REPO / "plexes" / "verniplex.yaml").read_text())
    data["roles"]["lb"].pop("os", None)
    path = tmp_path / "verniplex.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_plex(path)


def keepalived_t(netns: str, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "keepalived", "-t", "-f", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )


def lb_conf_in_a_build_vms_network(tmp_path: Path, plex: Plex, netns: str) -> Path:
    """The first lb's rendered keepalived.conf, runnable here, and `netns` holding only the
    VM's NIC under its predictable name (enp5s0). The VRRP password is pushed at creation and
    the check script is the image's: stand-ins in their place here (the host has neither)."""
    lb = next(n for n in topology.nodes(plex) if n.role is Role.LB)
    path = f"{NODES_DIR}/{lb.name}/etc/keepalived/keepalived.conf"
    files = vm_recipe(plex, Role.LB).layer.files
    text = next(f.content for f in files if f.path == path).decode()
    auth = tmp_path / "auth.conf"
    auth.write_text("auth_pass testpass\n")
    conf = tmp_path / "keepalived.conf"
    text = text.replace(VRRP_AUTH_FILE, str(auth))
    conf.write_text(text.replace("/etc/keepalived/check_apiserver.sh", "/bin/true"))
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "enp5s0", "type", "veth", "peer", "name", "peer0"],
        check=True,
    )
    return conf


def test_a_vm_lbs_keepalived_interface_is_the_one_cloud_init_names(
    tmp_path: Path, netns: str
) -> None:
    plex = vm_lb_plex(tmp_path)
    iface = plex.network.interface
    lb = next(n for n in topology.nodes(plex) if n.role is Role.LB)
    assert lb.virt is Virt.VM
    eth = yaml.safe_load(network_config(plex, lb))["ethernets"][iface]
    assert eth["match"] == {"macaddress": lb.mac} and eth["set-name"] == iface
    conf = lb_conf_in_a_build_vms_network(tmp_path, plex, netns)
    assert f"interface {iface}\n" in conf.read_text()
    # Only the VM's predictable name: refused (keepalived checks the interface exists).
    res = keepalived_t(netns, conf)
    assert res.returncode != 0, res.stderr
    assert f"interface {iface} for vrrp_instance" in res.stderr and "doesn't exist" in res.stderr
    # After cloud-init's rename: accepted.
    subprocess.run(["ip", "-n", netns, "link", "set", "enp5s0", "name", iface], check=True)
    res = keepalived_t(netns, conf)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_vm_bakes_checks_see_the_nodes_interface_name(tmp_path: Path, netns: str) -> None:
    """The Packer build VM has only its firmware-named NIC: the lb recipe's `keepalived -t`
    runs through checks_offline, in a namespace of its own holding the nodes' interface name,
    and passes there; the same check run directly in the build VM's network is refused."""
    plex = vm_lb_plex(tmp_path)
    iface = plex.network.interface
    recipe = vm_recipe(plex, Role.LB)
    conf = lb_conf_in_a_build_vms_network(tmp_path, plex, netns)
    check = f"keepalived -t -f {conf}"
    assert keepalived_t(netns, conf).returncode != 0
    (line,) = checks_offline([check], iface)
    res = subprocess.run(
        ["ip", "netns", "exec", netns, "/bin/sh", "-ec", line],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # And the bake's files transaction runs the recipe's checks exactly that way.
    provisioners = template_for(plex, Role.LB)["provisioners"]
    scripts = [
        shlex.split(line)[-1]
        for p in provisioners
        for line in p.get("inline", [])
        if line.startswith("transactional-update ")
    ]
    (wrapped,) = checks_offline(recipe.layer.validate, iface)
    assert any(wrapped in script for script in scripts)
