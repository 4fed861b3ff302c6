"""Incus accepts a VM node's instance config as plex creates it: the role's VM profile keys, the
NIC with its precomputed MAC, and the cloud-init keys carrying the node's identity.

Measured here: Incus 6.0 refuses to even create a VM instance on these machines ("Instance type
"virtual-machine" is not supported on this server: vhost_vsock kernel module not loaded"), so
the same config and devices go through Incus's validation as a profile (profiles are checked
against the keys of every instance type), and the refusal itself is asserted: when this machine
can create VMs, the test says so and must be switched to creating the instance."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from plex.deploy.cloudinit import NETWORK_CONFIG, USER_DATA, cloud_init_config
from plex.deploy.spec import instance_spec, load_profile
from plex.errors import BackendError
from plex.model import topology
from plex.model.image import ImageRef
from plex.model.plex import Role, Virt
from plex.services.bake_vm import import_vm_image
from plex.services.node_create import JOIN_DROPIN, NodeFactory
from plex.store.identity import require_identity

from .conftest import demo_plex

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus

pytestmark = pytest.mark.incus


def test_incus_accepts_a_vm_nodes_instance_config(
    incus: PylxdIncus, session_project: str, state_dirs: Path
) -> None:
    plex = demo_plex(session_project, name="vmplex", **{"os.virt": "vm"})
    identity = require_identity(plex)
    node = topology.resolve(plex, "vmplex-server1")
    assert node.virt is Virt.VM
    spec = instance_spec(
        plex,
        node,
        ImageRef(Role.SERVER, "d" * 64, "f" * 64, "vmplex/server"),
        load_profile(Role.SERVER, Virt.VM),
    )
    config = {**spec.config, **cloud_init_config(plex, identity, node)}
    assert spec.type == "virtual-machine"
    with pytest.raises(BackendError, match="vhost_vsock"):
        incus.create_instance(
            node.name,
            image="",
            config=config,
            devices=spec.devices,
            profiles=list(spec.profiles),
            virt=spec.type,
            source={"type": "none"},
        )
    profile = f"{node.name}-vm-config"
    incus.sync(
        "POST",
        "profiles",
        json={"name": profile, "config": config, "devices": spec.devices},
        what="create profile",
    )
    try:
        got = incus.sync("GET", f"profiles/{profile}", what="read back")
        assert got["config"][USER_DATA] == config[USER_DATA]
        assert got["config"][NETWORK_CONFIG] == config[NETWORK_CONFIG]
        assert got["devices"]["eth0"]["hwaddr"] == node.mac
        # And Incus does validate: a malformed MAC is refused.
        bad = {**spec.devices, "eth0": {**spec.devices["eth0"], "hwaddr": "not-a-mac"}}
        with pytest.raises(BackendError):
            incus.sync(
                "PUT",
                f"profiles/{profile}",
                json={"config": config, "devices": bad},
                what="update profile",
            )
    finally:
        incus.sync("DELETE", f"profiles/{profile}", what="delete profile")


class RecordingIncus:
    """The real Incus for create_instance (its refusal recorded), every call after it only
    recorded: what the Applier's NodeFactory does for a VM node, in order."""

    def __init__(self, incus: object) -> None:
        self.incus = incus
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.refused = ""

    def create_instance(self, name: str, **kw: object) -> None:
        self.calls.append(("create_instance", {"name": name, **kw}))
        try:
            self.incus.create_instance(name, **kw)  # type: ignore[attr-defined]
        except BackendError as e:
            self.refused = e.message

    def __getattr__(self, verb: str) -> Any:  # every other Incus call: recorded, not sent
        return lambda *a, **kw: self.calls.append((verb, {"args": a, **kw}))


@pytest.mark.parametrize(
    ("node_name", "join"),
    [("vmplex-agent1", False), ("vmplex-lb1", False), ("vmplex-server1", True)],
)
def test_the_applier_create_request_for_a_vm_node_is_valid_incus_config(
    incus: PylxdIncus,
    session_project: str,
    state_dirs: Path,
    node_name: str,
    join: bool,
    tmp_path: Path,
) -> None:
    """The exact request the Applier's NodeFactory sends for a VM node: Incus refuses the
    instance type here (vhost_vsock; lxc/incus v6.0.4 internal/server/instance/drivers/
    driver_qemu.go:8813, checked at start-up in the qemu driver's Info(), and
    instance_utils.go:734 refuses the type at create), so its whole config and devices go
    through Incus's validation as a profile. No file is pushed into the VM: its per-node data
    is in the cloud-init keys."""
    plex = demo_plex(session_project, name="vmplex", **{"os.virt": "vm"})
    identity = require_identity(plex)
    node = topology.resolve(plex, node_name)
    # A real VM image (a qcow2 from qemu-img) so Incus gets as far as the instance type.
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    fp = import_vm_image(incus, disk, "plex test VM image", {"plex.test": "vm-create"})
    spec = instance_spec(
        plex,
        node,
        ImageRef(node.role, "d" * 64, fp, f"vmplex/{node.role.value}"),
        load_profile(node.role, Virt.VM),
    )
    rec = RecordingIncus(incus)
    factory = NodeFactory(plex, rec, identity, lambda n, m: None)
    factory.create(spec, 1, join=join)
    incus.delete_image(fp)
    assert "vhost_vsock kernel module not loaded" in rec.refused
    verbs = [v for v, _ in rec.calls]
    # No push_file, make_dirs or pin_hostname; the Applier starts the node as its own step.
    assert verbs == ["create_instance"]
    sent = rec.calls[0][1]
    assert sent["virt"] == "virtual-machine" and sent["image"] == fp
    config, devices = sent["config"], sent["devices"]
    assert isinstance(config, dict) and isinstance(devices, dict)
    assert {USER_DATA, NETWORK_CONFIG} <= set(config)
    assert devices["eth0"]["hwaddr"] == node.mac
    # What a container gets by file push after create is in the user-data's write_files.
    written = {f["path"] for f in yaml.safe_load(str(config[USER_DATA]))["write_files"]}
    assert {m.path for m in spec.manifests} <= written
    assert (JOIN_DROPIN in written) is join
    assert "name" not in devices["eth0"]  # the guest names its NIC (cloud-init set-name)
    profile = f"{node.name}-applier-request"
    incus.sync(
        "POST",
        "profiles",
        json={"name": profile, "config": config, "devices": devices},
        what="create profile",
    )
    try:
        got = incus.sync("GET", f"profiles/{profile}", what="read back")
        # Incus stores every key as sent ("" means unset: user.plex.deploy outside a deploy).
        assert got["config"] == {k: v for k, v in config.items() if v != ""}
        assert got["devices"] == devices
    finally:
        incus.sync("DELETE", f"profiles/{profile}", what="delete profile")
