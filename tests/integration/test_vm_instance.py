"""Incus accepts a VM node's instance config as plex creates it: the role's VM profile keys, the
NIC with its precomputed MAC, and the cloud-init keys carrying the node's identity.

Measured here: Incus 6.0 refuses to even create a VM instance on these machines ("Instance type
"virtual-machine" is not supported on this server: vhost_vsock kernel module not loaded"), so
the same config and devices go through Incus's validation as a profile (profiles are checked
against the keys of every instance type), and the refusal itself is asserted: when this machine
can create VMs, the test says so and must be switched to creating the instance."""

from __future__ import annotations

import pytest

from plex.deploy.cloudinit import NETWORK_CONFIG, USER_DATA, cloud_init_config
from plex.deploy.spec import instance_spec, load_profile
from plex.errors import BackendError
from plex.model import topology
from plex.model.image import ImageRef
from plex.model.plex import Role, Virt
from plex.store.identity import require_identity

from .conftest import demo_plex

pytestmark = pytest.mark.incus


def test_incus_accepts_a_vm_nodes_instance_config(incus, session_project: str, state_dirs) -> None:  # type: ignore[no-untyped-def]
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
