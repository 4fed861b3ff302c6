"""Pristine snapshots without a daemon: which snapshot a reset restores and when it refuses;
how many nodes a wave creates at once when the user does not say."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plex.errors import UsageError
from plex.model import owner, topology
from plex.model.observed import Observed, ObservedInstance
from plex.plexfile.load import load_plex
from plex.services.parallelism import adaptive_parallel
from plex.services.snapshot import PREFIX, Snapshots, snapshot_name

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SnapshotIncus:
    held: dict[str, list[str]] = field(default_factory=dict)

    def snapshots(self, name: str) -> list[str]:
        return list(self.held.get(name, []))


def deployed(plex) -> Observed:  # type: ignore[no-untyped-def]
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
    incus = SnapshotIncus()
    for name, inst in observed.instances.items():
        incus.held[name] = [
            snapshot_name(inst.image or "", "20261201100000"),
            snapshot_name(inst.image or "", "20261201110000"),
            "by-hand",
        ]
    # One node missed the later snapshot: the earlier one is the last consistent state.
    incus.held["demo-agent2"].pop(1)
    snaps = Snapshots(plex, incus, ROOT)  # type: ignore[arg-type]
    assert snaps.latest(observed) == "20261201100000"


def test_reset_refuses_a_node_replaced_since_the_snapshot() -> None:
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    observed = deployed(plex)
    incus = SnapshotIncus(
        {
            name: [snapshot_name(inst.image or "", "20261201100000")]
            for name, inst in observed.instances.items()
        }
    )
    # demo-server2 now runs another image (it was replaced): its snapshot went with it.
    incus.held["demo-server2"] = [snapshot_name("ff" * 32, "20261201100000")]
    with pytest.raises(
        UsageError,
        match=r"demo-server2 has no pristine snapshot of the image "
        r"it runs",
    ):
        Snapshots(plex, incus, ROOT).latest(observed)  # type: ignore[arg-type]


def test_parallelism_adapts_to_cores_and_memory() -> None:
    assert adaptive_parallel(cpus=2, available_mib=20_000) == 64
    assert adaptive_parallel(cpus=8, available_mib=2_048) == 16  # memory bound
    assert adaptive_parallel(cpus=1, available_mib=100) == 4  # never below 4
