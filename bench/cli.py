"""CLI start-up: whole `plex` processes, against a floor of `python -c pass` in the same run.

    .venv/bin/python bench/cli.py [--runs 21]

Each command runs as a fresh process (what a user waits for), interleaved with the floor so a
busy machine slows both alike. Prints each command's median wall time and median CPU time (user
+ sys of the finished process, from the kernel's accounting: less disturbed by other work on
the machine than wall time), their ratios to the floor, and whether the median wall time meets
the goal (<= 0.25 s for `plex --help` and `plex validate`). The load average goes with the
figures: on a busy machine wall time says more about the others than about plex.

Two ways to start: as an installed plex starts (pip compiles a wheel's bytecode at install;
here a private PYTHONPYCACHEPREFIX, written by the warm-up run, so the tree stays clean),
which the goal is for; and compiling plex from source on every run, as a shell with
PYTHONDONTWRITEBYTECODE=1 does (shown, not judged).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.25  # seconds, median wall
FLOOR = "python -c pass (floor)"

COMMANDS: dict[str, list[str]] = {
    FLOOR: [sys.executable, "-c", "pass"],
    "plex --help": [sys.executable, "-m", "plex", "--help"],
    "plex validate plexes/demo.yaml": [
        sys.executable,
        "-m",
        "plex",
        "validate",
        "plexes/demo.yaml",
    ],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one whole process; only one child runs at a time, so the
    children's CPU counter grows by exactly this one's."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(
        argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start, _children_cpu() - cpu


def measure(title: str, env: dict[str, str], runs: int, judge: bool) -> bool:
    """Print one table of medians; True unless a judged command misses the goal."""
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # warm the page cache (and write the bytecode) first
        once(argv, env)
    load_before = os.getloadavg()[0]
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            w, c = once(argv, env)
            wall[name].append(w)
            cpu[name].append(c)
    load_after = os.getloadavg()[0]
    floor_wall = statistics.median(wall[FLOOR])
    floor_cpu = statistics.median(cpu[FLOOR])
    ok = True
    print(
        f"{title}: {runs} runs each; load average (1 min) {load_before:.2f} before, "
        f"{load_after:.2f} after"
    )
    print(f"{'command':<32} {'wall s':>7} {'x floor':>7} {'cpu s':>7} {'x floor':>7}  goal")
    for name in COMMANDS:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        goal = ""
        if judge and name != FLOOR:
            goal = "ok" if w <= GOAL else f"MISSED (> {GOAL} s)"
        ok &= "MISSED" not in goal
        print(f"{name:<32} {w:7.3f} {w / floor_wall:7.2f} {c:7.3f} {c / floor_cpu:7.2f}  {goal}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument(
        "--installed-only", action="store_true", help="skip the compile-from-source table"
    )
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="plex-bench-pyc-") as pyc:
        installed = {**base, "PYTHONPYCACHEPREFIX": pyc}
        ok = measure("installed (bytecode cached)", installed, args.runs, judge=True)
    if not args.installed_only:
        print()
        source = {**base, "PYTHONDONTWRITEBYTECODE": "1"}
        measure("from source (PYTHONDONTWRITEBYTECODE=1)", source, args.runs, judge=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
