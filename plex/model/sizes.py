"""Byte counts as people read them: the one size formatter of tables, reports and messages."""

from __future__ import annotations

# What a plex file may write for memory, disk and cache sizes (plex.model.plex.Size).
SIZE_PATTERN = r"^\d+(\.\d+)?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"


def human_size(n: float | None, zero: str = "-") -> str:
    """`17 B`, `512.0 KiB`, `1.5 GiB`; None (unknown) is "-", 0 is `zero`."""
    if n is None:
        return "-"
    if not n:
        return zero
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{f:.1f} GiB"  # not reached: GiB takes everything left
