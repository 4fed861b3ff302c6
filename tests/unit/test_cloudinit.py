"""VM nodes' cloud-init data: every VM node's user-data through the real `cloud-init schema`
(Debian's cloud-init, installed by bin/setup-incus), its content, and golden network-configs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from plex.deploy.cloudinit import cloud_init_config, network_config, user_data
from plex.model import topology
from plex.model.identity import TOKEN_FILE, Identity, compute_identity
from plex.model.plex import Plex, Virt
from plex.model.topology import Node
from plex.plexfile.load import load_plex
from tests.unit.test_packer_template import FixedKeyGen

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "cloudinit"
VM_PLEXES = ["omniplex", "verniplex"]


def schema(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "user-data"
    f.write_text(text)
    return subprocess.run(
        ["cloud-init", "schema", "--config-file", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )


def vm_nodes(name: str) -> tuple[Plex, Identity, list[Node]]:
    plex = load_plex(REPO / "plexes" / f"{name}.yaml")
    identity = compute_identity(plex, None, FixedKeyGen())
    return plex, identity, [n for n in topology.nodes(plex) if n.virt is Virt.VM]


@pytest.mark.parametrize("name", VM_PLEXES)
def test_every_vm_nodes_user_data_passes_cloud_inits_own_schema(name: str, tmp_path: Path) -> None:
    plex, identity, nodes = vm_nodes(name)
    assert nodes
    for node in nodes:
        res = schema(user_data(plex, identity, node), tmp_path)
        assert res.returncode == 0, f"{node.name}: {res.stdout}{res.stderr}"
        assert "Valid cloud-config" in res.stdout


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    res = schema(
        "#cloud-config\nssh_keys: 5\nwrite_files:\n- path: /x\n  permissions: 600\n", tmp_path
    )
    assert res.returncode != 0 and "permissions: 600 is not of type 'string'" in res.stderr


def test_user_data_carries_the_nodes_identity() -> None:
    plex, identity, nodes = vm_nodes("verniplex")
    node = next(n for n in nodes if n.role.is_kube)
    text = user_data(plex, identity, node)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["hostname"] == node.name and doc["fqdn"] == node.fqdn(plex.network.domain)
    keys = identity.host_keys(node.name)
    assert doc["ssh_keys"] == {
        "ed25519_private": keys["ed25519"].private,
        "ed25519_public": keys["ed25519"].public_key,
        "rsa_private": keys["rsa"].private,
        "rsa_public": keys["rsa"].public_key,
    }
    assert doc["ssh_deletekeys"] is False and doc["ssh_genkeytypes"] == ["ed25519", "rsa"]
    files = {f["path"]: f for f in doc["write_files"]}
    password = files["/etc/rancher/node/password"]["content"]
    assert password == identity.node_password(node.name) + "\n"
    assert yaml.safe_load(files[TOKEN_FILE]["content"]) == {"token": identity.token}
    assert {f["permissions"] for f in files.values()} == {"0600"}
    assert not any(p.startswith("/etc/ssh/") for p in files)


@pytest.mark.parametrize("name", VM_PLEXES)
def test_golden_network_configs_match_by_mac(name: str) -> None:
    plex, identity, nodes = vm_nodes(name)
    text = "".join(f"--- {n.name}\n{network_config(plex, n)}" for n in nodes)
    path = GOLDEN / f"{name}-network-config.txt"
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
    for n in nodes:
        cfg = yaml.safe_load(network_config(plex, n))
        assert cfg["version"] == 2
        assert cfg["ethernets"][plex.network.interface]["match"] == {"macaddress": n.mac}
        assert cfg["ethernets"][plex.network.interface]["set-name"] == plex.network.interface
        assert set(cloud_init_config(plex, identity, n)) == {
            "cloud-init.user-data",
            "cloud-init.network-config",
        }


def run_net_convert(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """cloud-init's own v2 parser and networkd renderer, as on openSUSE."""
    argv = ["cloud-init", "devel", "net-convert", "-p", str(src), "-k", "yaml", "-d", str(out)]
    return subprocess.run(
        [*argv, "-D", "opensuse", "-O", "networkd"], capture_output=True, text=True, check=False
    )


def net_convert(text: str, tmp_path: Path) -> dict[str, str]:
    """The files cloud-init renders from `text`, by name."""
    src, out = tmp_path / "network-config", tmp_path / "rendered"
    tmp_path.mkdir(parents=True, exist_ok=True)
    src.write_text(text)
    res = run_net_convert(src, out)
    assert res.returncode == 0, res.stderr[-1500:]
    return {p.name: p.read_text() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", VM_PLEXES)
def test_cloud_init_renders_every_vm_nodes_network_config(name: str, tmp_path: Path) -> None:
    plex, _, nodes = vm_nodes(name)
    iface = plex.network.interface
    for n in nodes:
        files = net_convert(network_config(plex, n), tmp_path / n.name)
        text = files[f"10-cloud-init-{iface}.network"]
        assert f"MACAddress={n.mac}" in text and f"Name={iface}" in text
        if plex.network.addressing == "static":
            assert f"Address={n.address}/" in text


def test_cloud_init_refuses_default_as_a_route_in_this_version(tmp_path: Path) -> None:
    """Why plex writes 0.0.0.0/0: the check can fail, on what plex used to render."""
    src = tmp_path / "nc"
    src.write_text("version: 2\nethernets:\n  eth0:\n    routes: [{to: default, via: 10.0.0.1}]\n")
    res = run_net_convert(src, tmp_path / "o")
    assert res.returncode != 0 and "Address default is not a valid ip address" in res.stderr
