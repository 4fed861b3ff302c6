"""CLI start-up: whole `plex` processes, against a floor of `python -c pass` in the same run.

    .venv/bin/python bench/cli.py [--runs 21]

Each command runs as a fresh process (what a user waits for), interleaved with the floor so a
busy machine slows both alike. Prints the median wall time of each, its ratio to the floor, and
whether the median meets the goal (<= 0.25 s for `plex --help` and `plex validate`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.25  # seconds, median

COMMANDS: dict[str, list[str]] = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "plex --help": [sys.executable, "-m", "plex", "--help"],
    "plex validate plexes/demo.yaml": [
        sys.executable,
        "-m",
        "plex",
        "validate",
        "plexes/demo.yaml",
    ],
}


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # warm the page cache and .pyc files first
        once(argv)
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            times[name].append(once(argv))
    floor = statistics.median(times["python -c pass (floor)"])
    ok = True
    print(f"{'command':<34} {'median s':>9} {'x floor':>8}  goal")
    for name, ts in times.items():
        med = statistics.median(ts)
        goal = "" if "floor" in name else ("ok" if med <= GOAL else f"MISSED (> {GOAL} s)")
        ok &= "MISSED" not in goal
        print(f"{name:<34} {med:9.3f} {med / floor:8.2f}  {goal}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
