"""How many nodes a deploy creates and boots at once when the user did not say (--parallel)."""

from __future__ import annotations

import os
from pathlib import Path


def adaptive_parallel(cpus: int | None = None, available_mib: int | None = None) -> int:
    """How many nodes to create and boot at once when the user did not say: Incus creates are
    copy-on-write clones and boots mostly wait on each other, so a host runs many at once;
    what bounds it is memory for booting systemds (about 128 MiB each) and the cores' share
    of the work (32 per core)."""
    cpus = cpus or os.cpu_count() or 1
    if available_mib is None:
        available_mib = _available_mib()
    return max(4, min(32 * cpus, available_mib // 128))


def _available_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


def boot_slots(
    cpus: int | None = None, available_mib: int | None = None, load: float | None = None
) -> int:
    """How many nodes boot at once (from their start until their probes pass), separately
    from the creates. A boot is CPU work (systemd, sshd, RKE2 and containerd starting), so
    more boots at once than the cores can run only stretch every boot and make the probes
    slower still: 4 per core that is free (the 1-minute load beyond the cores, from other
    work on the host, takes its share), at most one per 256 MiB available, at least 2."""
    cpus = cpus or os.cpu_count() or 1
    if available_mib is None:
        available_mib = _available_mib()
    if load is None:
        load = os.getloadavg()[0]
    free = max(1.0, cpus - max(0.0, load - cpus))
    return max(2, min(int(4 * free), available_mib // 256))
