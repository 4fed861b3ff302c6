"""Reboot windows for MicroOS nodes: when rebootmgr may reboot after a transactional update. Pure.

The plex file's `reboot_windows` gives hour slots, minute offsets and a duration, as the ProxmoxVE
seed defines them: every slot x offset pair is one window (slot-major: 17:00, 17:15, ...,
18:45 for slots [17, 18] and offsets [0, 15, 30, 45]). The nodes of a role take the windows in
order, so two nodes of a role never share a window while there are enough of them; with more
nodes than windows the list wraps around (the first window is reused, and so on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from plex.model.plex import RebootWindows


class RebootMethod(StrEnum):
    """`REBOOT_METHOD` of /etc/transactional-update.conf."""

    REBOOTMGR = "rebootmgr"  # lb nodes: reboot alone, inside the node's window
    KURED = "kured"  # kube nodes: t-u writes the sentinel, kured drains and reboots one by one


# kured's default sentinel: transactional-update with REBOOT_METHOD=kured creates it.
KURED_SENTINEL = "/var/run/reboot-required"


@dataclass(frozen=True)
class Window:
    hour: int
    minute: int
    duration: str  # as in the plex file: 1h, 30m, 1h30m

    @property
    def start(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    def to_json(self) -> dict[str, str]:
        return {"start": self.start, "duration": self.duration}


def reboot_windows(cfg: RebootWindows) -> tuple[Window, ...]:
    """Every slot x offset window, in slot-major order (duplicates in the file are kept)."""
    return tuple(Window(h, m, cfg.duration) for h in cfg.slots for m in cfg.offsets)


def assign_windows(cfg: RebootWindows, nodes: Sequence[str]) -> dict[str, Window]:
    """The window of each node of a role, in node order; wraps when nodes outnumber windows."""
    windows = reboot_windows(cfg)
    if not windows:
        # The model requires at least one slot and offset only implicitly (defaults): say so.
        raise ValueError("reboot_windows defines no window (slots or offsets is empty)")
    return {node: windows[i % len(windows)] for i, node in enumerate(nodes)}


def rebootmgr_conf(window: Window) -> str:
    """rebootmgr's config: reboot only inside the window (`maint-window` strategy)."""
    return (
        "# Written by plex: this node reboots after updates only inside its window.\n"
        "[rebootmgr]\n"
        f"window-start={window.start}\n"
        f"window-duration={window.duration}\n"
        "strategy=maint-window\n"
    )


def transactional_update_conf(method: RebootMethod) -> str:
    """/etc/transactional-update.conf: overrides /usr/etc/transactional-update.conf."""
    why = {
        RebootMethod.REBOOTMGR: "rebootmgr reboots inside this node's window",
        RebootMethod.KURED: f"t-u writes {KURED_SENTINEL}; kured drains and reboots",
    }[method]
    return f"# Written by plex: {why}.\nREBOOT_METHOD={method.value}\n"
