"""Commands after `deploy --evacuate` follow a node to the copy serving it: the smoke checks
and the registry commands run on the copy; snapshots refuse (they belong to a node's own
instance) in one line naming the nodes away from home."""

from __future__ import annotations

import pytest

from plex.deploy.copies import live_instances
from plex.deploy.plan import make_plan, simulate_apply
from plex.errors import ProbeError, UsageError
from plex.model import topology
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.services.registry.cache import IncusCache
from plex.services.smoke import check_images, running_images
from plex.services.snapshot import Snapshots
from tests.fixtures.fake_incus import FakeIncus
from tests.unit.test_plan_evacuate import down
from tests.unit.test_plan_members import ROOT, setup


def evacuated(member_of: str) -> tuple[Plex, Observed, str]:
    """omniplex deployed, the member holding `member_of` down, then `deploy --evacuate`."""
    plex, images, healthy = setup()
    member = healthy.instances[member_of].location
    assert member
    lost = down(healthy, member)
    return plex, simulate_apply(make_plan(plex, images, lost, evacuate=True), lost), member


def test_smoke_checks_each_node_on_the_copy_serving_it() -> None:
    plex, after, _ = evacuated("omniplex-server3")
    names = [n.name for n in topology.nodes(plex)]
    live = live_instances(after, names)
    assert live["omniplex-server3"] != "omniplex-server3"  # an evacuated copy serves it
    _, images, _ = setup()
    running = running_images(after, live)
    assert running.keys() == set(names)
    assert check_images(plex, running, {r: images[r].digest for r in Role}).ok
    # By instance name (what smoke did before), the evacuated node seemed to run nothing.
    by_instance = {n: after.instances[n].image if n in after.instances else None for n in names}
    with pytest.raises(ProbeError, match="omniplex-server3 runs nothing"):
        check_images(plex, by_instance, {r: images[r].digest for r in Role})


def test_registry_commands_run_on_the_registry_nodes_copy() -> None:
    plex, after, _ = evacuated("omniplex-registry1")
    cache = IncusCache(plex, FakeIncus.holding(after))
    assert cache.node.startswith("omniplex-registry1-"), cache.node
    assert after.instances[cache.node].running


def test_snapshots_refuse_nodes_away_from_home_in_one_line() -> None:
    plex, after, member = evacuated("omniplex-server3")
    with pytest.raises(UsageError) as e:
        Snapshots(plex, FakeIncus.holding(after), ROOT).latest(after)
    copy = live_instances(after, ["omniplex-server3"])["omniplex-server3"]
    assert f"omniplex-server3 (runs as {copy})" in e.value.message
    assert "\n" not in e.value.message
    # Not evacuated yet: its member is down.
    _, _, healthy = setup()
    lost = down(healthy, member)
    with pytest.raises(UsageError, match=r"omniplex-server3 \(its member is down\)"):
        Snapshots(plex, FakeIncus.holding(lost), ROOT).latest(lost)
