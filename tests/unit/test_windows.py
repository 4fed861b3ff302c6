"""Reboot windows: slots x offsets x duration, assigned to a role's nodes in order.

Golden files (tests/unit/golden/packer/windows-*.json) hold the windows of the repo's plexes
and the rebootmgr config each lb node gets; PLEX_UPDATE_GOLDEN=1 regenerates them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from plex.bake.windows import (
    RebootMethod,
    Window,
    assign_windows,
    reboot_windows,
    rebootmgr_conf,
    transactional_update_conf,
)
from plex.model import topology
from plex.model.plex import RebootWindows, Role
from plex.plexfile.load import load_plex

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "packer"


def test_proxmox_seed_example_gives_eight_windows() -> None:
    cfg = RebootWindows(slots=(17, 18), offsets=(0, 15, 30, 45), duration="1h")
    starts = [w.start for w in reboot_windows(cfg)]
    assert starts == ["17:00", "17:15", "17:30", "17:45", "18:00", "18:15", "18:30", "18:45"]
    assert {w.duration for w in reboot_windows(cfg)} == {"1h"}


def test_nodes_take_windows_in_order_and_wrap() -> None:
    cfg = RebootWindows(slots=(2,), offsets=(0, 30), duration="30m")
    got = assign_windows(cfg, ["n1", "n2", "n3"])
    assert got == {"n1": Window(2, 0, "30m"), "n2": Window(2, 30, "30m"), "n3": Window(2, 0, "30m")}


def test_default_is_one_window_at_three() -> None:
    assert [w.to_json() for w in reboot_windows(RebootWindows())] == [
        {"start": "03:00", "duration": "1h"}
    ]


def test_empty_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="no window"):
        assign_windows(RebootWindows(slots=(), offsets=(0,)), ["n1"])


def test_config_texts() -> None:
    assert rebootmgr_conf(Window(7, 5, "1h30m")).splitlines()[1:] == [
        "[rebootmgr]",
        "window-start=07:05",
        "window-duration=1h30m",
        "strategy=maint-window",
    ]
    assert transactional_update_conf(RebootMethod.KURED).endswith("\nREBOOT_METHOD=kured\n")


@pytest.mark.parametrize("plex_name", ["omniplex", "verniplex", "demo"])
def test_golden_windows(plex_name: str) -> None:
    plex = load_plex(REPO / "plexes" / f"{plex_name}.yaml")
    lbs = [n.name for n in topology.nodes(plex) if n.role is Role.LB]
    assigned = assign_windows(plex.reboot_windows, lbs)
    data = {
        "windows": [w.to_json() for w in reboot_windows(plex.reboot_windows)],
        "lb": {node: w.to_json() for node, w in assigned.items()},
        "rebootmgr.conf": {node: rebootmgr_conf(w) for node, w in assigned.items()},
    }
    text = json.dumps(data, indent=2) + "\n"
    path = GOLDEN / f"windows-{plex_name}.json"
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with PLEX_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path} differs: PLEX_UPDATE_GOLDEN=1 to accept"
