"""The one size formatter."""

from __future__ import annotations

from plex.model.sizes import human_size


def test_sizes_read_like_people_write_them() -> None:
    assert human_size(None) == "-"
    assert human_size(0) == "-" and human_size(0, zero="0 B") == "0 B"
    assert human_size(17) == "17 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 2**20) == "5.0 MiB"
    assert human_size(3 * 2**40) == "3072.0 GiB"  # GiB is the largest unit
