"""Pristine snapshots without a daemon: which snapshot a reset restores and when it refuses;
how many nodes a wave creates at once when the user does not say."""

from __future__ import annotations

from pathlib import Path

import pytest

from plex.errors import UsageError
from plex.model import owner, topology
from plex.model.observed import Observed, ObservedInstance
from plex.model.plex import Plex
from plex.plexfile.load import load_plex
from plex.services.parallelism import adaptive_parallel, boot_slots
from plex.services.pristine import PREFIX, snapshot_name, stale, survivors, whole_sets
from plex.services.snapshot import Snapshots
from tests.fixtures.fake_incus import FakeIncus

ROOT = Path(__file__).resolve().parents[2]


def deployed(plex: Plex) -> Observed:
    return Observed(
        plex.name,
        plex.incus.project,
        {
            n.name: ObservedInstance(
                n.name,
                "Running",
                f"u-{n.name}",
                {owner.PLEX: plex.name, owner.IMAGE: n.role.value * 8},
            )
            for n in topology.nodes(plex)
        },
    )


def test_snapshot_names_carry_the_image_and_the_time() -> None:
    assert snapshot_name("ab" * 32, "20261201101500") == f"{PREFIX}abababababab-20261201101500"


def test_reset_restores_the_newest_snapshot_every_node_has() -> None:
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    observed = deployed(plex)
    incus = FakeIncus()
    for name, inst in observed.instances.items():
        incus.snaps[name] = [
            snapshot_name(inst.image or "", "20261201100000"),
            snapshot_name(inst.image or "", "20261201110000"),
            "by-hand",
        ]
    # One node missed the later snapshot: the earlier one is the last consistent state.
    incus.snaps["demo-agent2"].pop(1)
    snaps = Snapshots(plex, incus, ROOT)
    assert snaps.latest(observed) == "20261201100000"


def test_reset_refuses_a_node_replaced_since_the_snapshot() -> None:
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    observed = deployed(plex)
    incus = FakeIncus()
    incus.snaps = {
        name: [snapshot_name(inst.image or "", "20261201100000")]
        for name, inst in observed.instances.items()
    }
    # demo-server2 now runs another image (it was replaced): its snapshot went with it.
    incus.snaps["demo-server2"] = [snapshot_name("ff" * 32, "20261201100000")]
    with pytest.raises(UsageError) as e:
        Snapshots(plex, incus, ROOT).latest(observed)
    # One line: which generation has no snapshot, and where.
    assert e.value.message == (
        "no pristine snapshot matches the deployed generation of plex 'demo': "
        "demo-server2 (serverserver) has none of the image running"
    )
    assert "\n" not in e.value.message
    assert (e.value.hint or "").startswith("take one of this generation: plex snapshot demo")


def test_a_set_is_whole_only_while_every_node_holds_it_for_the_image_it_runs() -> None:
    images = {"a": "1" * 64, "b": "2" * 64}
    held = {
        "a": [snapshot_name("1" * 64, "100"), snapshot_name("1" * 64, "200"), "by-hand"],
        # b was replaced after set 100 (a new image): its 100 is of the old generation.
        "b": [snapshot_name("9" * 64, "100"), snapshot_name("2" * 64, "200")],
    }
    assert whole_sets(images, held) == {"200"}
    # Retiring keeps the whole set and never touches snapshots that are not plex's own.
    assert stale(images, held) == [
        ("a", snapshot_name("1" * 64, "100")),
        ("b", snapshot_name("9" * 64, "100")),
    ]
    assert ("a", "by-hand") not in stale(images, held, everything=True)
    assert len(stale(images, held, everything=True)) == 4


def test_a_deploy_that_changes_nodes_retires_the_sets_of_the_survivors() -> None:
    from plex.deploy.plan import make_plan, simulate_apply
    from plex.model.image import ImageRef
    from plex.model.plex import Role

    plex = load_plex(ROOT / "plexes" / "demo.yaml")

    def refs(agent: str) -> dict[Role, ImageRef]:
        digests = {r: r.value * 8 for r in Role} | {Role.AGENT: agent}
        return {r: ImageRef(r, d, f"fp-{d}", f"demo/{r.value}") for r, d in digests.items()}

    empty = Observed(plex.name, plex.incus.project)
    observed = simulate_apply(make_plan(plex, refs("agent" * 8), empty), empty)
    plan = make_plan(plex, refs("agent" * 8), observed)
    assert plan.empty and survivors(plan) == {}
    plan = make_plan(plex, refs("9" * 64), observed)  # a new agent generation rolls out
    kept = survivors(plan)
    assert set(kept) == {n.name for n in topology.nodes(plex) if n.role is not Role.AGENT}
    assert kept["demo-server1"] == "server" * 8


def test_parallelism_adapts_to_cores_and_memory() -> None:
    assert adaptive_parallel(cpus=2, available_mib=20_000) == 64
    assert adaptive_parallel(cpus=8, available_mib=2_048) == 16  # memory bound
    assert adaptive_parallel(cpus=1, available_mib=100) == 4  # never below 4


def test_boots_at_once_follow_the_free_cores_and_memory() -> None:
    assert boot_slots(cpus=2, available_mib=20_000, load=0.5) == 8
    assert boot_slots(cpus=2, available_mib=20_000, load=3.0) == 4  # a core taken by others
    assert boot_slots(cpus=8, available_mib=1_024, load=0.0) == 4  # memory bound
    assert boot_slots(cpus=1, available_mib=100, load=40.0) == 2  # never below 2
