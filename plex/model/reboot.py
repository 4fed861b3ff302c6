"""kured's reboot window from the plex's `reboot_windows`, and kured's day names. Pure.

kured has ONE window (start, end, days, time zone) for the whole cluster, not one per node, so
plex gives it the span of the plex's windows: from the earliest slot/offset start to the latest
start + duration. kured tests the window on one day (start < now < end), so a span crossing
midnight would never match: that is refused. Facts pinned in deploy/kured/kured-flags.txt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plex.model.plex import Plex, RebootWindows, parse_day

__all__ = ["KuredWindow", "kured_enabled", "kured_window", "parse_day"]


def _minutes(duration: str) -> int:
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", duration)
    assert m is not None, duration  # the model validated it
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


@dataclass(frozen=True)
class KuredWindow:
    start: str  # HH:MM (kured layout "15:04")
    end: str
    days: tuple[str, ...]
    time_zone: str


def kured_window(windows: RebootWindows, time_zone: str = "UTC") -> KuredWindow:
    """The span of every slot x offset window. ValueError when it would cross midnight."""
    starts = [h * 60 + m for h in windows.slots for m in windows.offsets]
    if not starts:
        raise ValueError("reboot_windows defines no window (slots or offsets is empty)")
    first = min(starts)
    last = max(starts) + _minutes(windows.duration)
    if last > 24 * 60 - 1:
        raise ValueError(
            f"the windows end at {last // 60:02d}:{last % 60:02d}, after midnight: kured tests "
            "its window within one day, so it would never reboot; move the slots earlier"
        )
    return KuredWindow(
        f"{first // 60:02d}:{first % 60:02d}",
        f"{last // 60:02d}:{last % 60:02d}",
        tuple(windows.days),
        time_zone,
    )


def kured_enabled(plex: Plex) -> bool:
    if plex.kured.enabled is not None:
        return plex.kured.enabled
    # Only transactional nodes write the sentinel; a Debian container node never needs kured.
    return any(
        plex.os_for(r).base.startswith("opensuse-microos")
        for r, rc in plex.roles.items()
        if r.is_kube and rc.count
    )
