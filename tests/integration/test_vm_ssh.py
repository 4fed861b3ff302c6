"""SSH probes of agentless VM nodes, for real: log in with the plex's deploy key to a node that
presents its precomputed host key, and run the role's real probes (deploy/probes.yaml) there.

STAND-IN: Incus here cannot create VMs, so the VM guest is a Debian container running only
OpenSSH's sshd (`ssh-guest` image, mmdebstrap). It gets the node's precomputed host keys pushed
the way deploy pushes them, and root's authorized key taken from the node's own cloud-init
user-data (what cloud-init would write in the VM). It is reached only over SSH, on the test
bridge, at the node's address and MAC.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.backends.ssh import SshExecutor, SshTarget
from plex.deploy.cloudinit import user_data
from plex.deploy.probes import Probe, ProbeSet, load_probes, probe_node, run_probe
from plex.errors import BackendError, ProbeError
from plex.model import topology
from plex.model.identity import SystemKeyGen
from plex.model.plex import Plex, Role
from plex.model.topology import Node
from plex.store.identity import require_identity
from tests.fixtures.incus_cluster import bridged_devices, debian_image

from .conftest import NETWORK, POOL, ROOT, demo_plex

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus

pytestmark = pytest.mark.incus

PACKAGES = ("systemd", "systemd-sysv", "dbus", "udev", "iproute2", "openssh-server")
HOOKS = (
    "printf '[Match]\\nName=eth0\\n[Network]\\nDHCP=ipv4\\n'"
    ' > "$1"/etc/systemd/network/eth0.network',
    'chroot "$1" systemctl enable systemd-networkd ssh',
    # No host keys in the image (openssh-server's postinst made some): the node's are pushed.
    'rm -f "$1"/etc/ssh/ssh_host_* "$1"/etc/resolv.conf "$1"/etc/hostname',
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/archives/*.deb',
)


@pytest.fixture(scope="module")
def guest(
    incus: PylxdIncus, session_project: str, state_dirs: Path
) -> Iterator[tuple[Plex, Node, SshExecutor]]:
    # Its own host numbers (the demo's lbs are .11/.12): a node another module left behind
    # never holds this guest's address.
    plex = demo_plex(session_project, name="sshplex", **{"os.virt": "vm", "roles.lb.offset": 141})
    identity = require_identity(plex)
    assert identity.deploy_key is not None
    node = topology.resolve(plex, "sshplex-lb1")
    cache = Path(os.environ.get("PLEX_CACHE_DIR", "/var/cache/plex-test"))
    meta, rootfs = debian_image(cache, "ssh-guest", PACKAGES, HOOKS, "sshd stand-in VM guest")
    fp = incus.import_image(meta, rootfs, {"plex.test": "ssh-guest"})
    incus.create_instance(
        node.name,
        image=fp,
        config={},
        devices=bridged_devices(POOL, NETWORK, node.address, node.mac),
        profiles=[],
    )
    try:
        # The host keys as deploy pushes them (the node's private files), and root's key as
        # the node's cloud-init user-data hands it to cloud-init.
        for f in identity.private_files(node.name, node.role):
            if f.path.startswith("/etc/ssh/ssh_host_"):
                incus.push_file(node.name, f.path, f.data, f.mode)
        doc = yaml.safe_load(user_data(plex, identity, node))
        root = next(u for u in doc["users"] if u["name"] == "root")
        incus.make_dirs(node.name, "/root/.ssh", 0o700)
        keys = "".join(k + "\n" for k in root["ssh_authorized_keys"])
        incus.push_file(node.name, "/root/.ssh/authorized_keys", keys.encode(), 0o600)
        incus.start(node.name)
        target = SshTarget(node.address, identity.host_keys(node.name)["ed25519"].public_key)
        ssh = SshExecutor({node.name: target}, identity.deploy_key.private)
        deadline = time.monotonic() + 90
        while True:  # sshd up (DHCP, then ssh.service)
            try:
                ssh.exec(node.name, ["true"])
                break
            except BackendError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield plex, node, ssh
        ssh.close()
    finally:
        incus.delete_instance(node.name)
        incus.delete_image(fp)


def test_the_roles_real_probes_pass_over_ssh(guest: tuple[Plex, Node, SshExecutor]) -> None:
    plex, node, ssh = guest
    identity = require_identity(plex)
    # The common probes of every role (systemd, sshd host key) as deploy/probes.yaml says;
    # the lb-only ones need haproxy and keepalived, which the stand-in does not run.
    common = ProbeSet(load_probes(ROOT / "deploy" / "probes.yaml").common)
    results = probe_node(ssh, plex, node, identity, common)
    assert [r.probe for r in results] == ["systemd", "sshd host key"]
    assert all(r.ok for r in results)
    # The probe ran on the guest: its own hostname and the address plex gave it.
    res = ssh.exec(node.name, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
    assert res.returncode == 0 and f"inet {node.address}/" in res.stdout


def test_a_failing_probe_is_one_line(guest: tuple[Plex, Node, SshExecutor]) -> None:
    _, node, ssh = guest
    probe = Probe("haproxy ports", "ss -Hltn '( sport = :6443 )' | wc -l", "^1$", timeout=2)
    with pytest.raises(ProbeError) as e:
        run_probe(ssh, node.name, node.name, probe)
    assert "\n" not in e.value.message
    assert e.value.message.startswith(f"{node.name}: probe 'haproxy ports' failed after")
    assert "last output: 0" in e.value.message


def test_a_wrong_host_key_is_refused_in_one_line(guest: tuple[Plex, Node, SshExecutor]) -> None:
    _, node, ssh = guest
    other = SystemKeyGen().host_key("ed25519", "root@elsewhere").public_key
    wrong = SshExecutor({node.name: SshTarget(node.address, other)}, ssh.client_key)
    with pytest.raises(BackendError) as e:
        wrong.exec(node.name, ["true"])
    assert "\n" not in e.value.message
    assert "presented host key SHA256:" in e.value.message and "not the node's" in e.value.message


def test_a_refused_deploy_key_is_one_line(guest: tuple[Plex, Node, SshExecutor]) -> None:
    _, node, ssh = guest
    stranger = SystemKeyGen().host_key("ed25519", "someone@else").private
    refused = dataclasses.replace(ssh, client_key=stranger, _open={})
    with pytest.raises(BackendError) as e:
        refused.exec(node.name, ["true"])
    assert "\n" not in e.value.message
    assert e.value.message == (
        f"ssh root@{node.address}:22 ({node.name}): the plex's deploy key was refused"
    )
    assert node.role is Role.LB
