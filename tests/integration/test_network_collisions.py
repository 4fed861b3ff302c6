"""`plex deploy` checks the live network before creating: a node name or address already used
on the bridge by another project stops the deploy with nothing created (real Incus)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from plex.backends.incus.client import throwaway_project
from plex.deploy.plan import make_plan
from plex.errors import PlexError
from plex.model import topology
from plex.model.image import ImageRef
from plex.model.plex import Role
from plex.services.deploy import check_network

from .conftest import demo_plex

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from plex.model.plex import IncusConfig

pytestmark = pytest.mark.incus


def images() -> dict[Role, ImageRef]:
    return {r: ImageRef(r, "d" * 64, "f" * 64, f"demo/{r.value}") for r in Role}


def test_a_name_and_an_address_taken_in_another_project_stop_the_deploy(
    incus: PylxdIncus, incus_cfg: IncusConfig
) -> None:
    plex = demo_plex(incus.project)
    server1 = topology.master(plex)
    # Named under the session's project: it is this session's to delete (throwaway_projects).
    other_name = f"{incus.project}-other-{uuid.uuid4().hex[:6]}"
    other_cfg = incus_cfg.model_copy(update={"project": other_name})
    plan = make_plan(plex, images(), incus.observe(plex.name))
    check_network(plex, incus, plan)  # nothing on the network yet: fine
    with throwaway_project(other_cfg, other_cfg.project) as other:
        # An empty (never started) container is enough: Incus holds its name and reserved
        # address on the bridge the moment it exists.
        other.create_instance(
            server1.name,
            image="",
            source={"type": "none"},
            profiles=["default"],
            config={"user.note": "someone else's"},
            devices={
                "root": {"type": "disk", "path": "/", "pool": incus_cfg.pool},
                "eth0": {
                    "type": "nic",
                    "network": incus_cfg.network,
                    "ipv4.address": plex.network.vip or "",
                },
            },
        )
        with pytest.raises(PlexError) as e:
            check_network(plex, incus, plan)
        msg = e.value.message
        assert msg == (
            f"plex 'demo' collides with project '{other_cfg.project}' (not plex-owned) on "
            f"network {incus_cfg.network}: node name {server1.name} taken (Incus DNS names are "
            f"per network); address {plex.network.vip} (the VIP) by {server1.name} in use"
        )
        assert server1.name not in incus.instance_names()
