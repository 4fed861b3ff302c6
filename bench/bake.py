#!/usr/bin/env python3
"""Bake benchmark: plex against the same recipe done by hand, measured in one run.

Prints, for the demo plex (all four roles):
  cold bake        empty download/layer cache: mmdebstrap package layers + plex layers
  no-op bake       nothing changed
  data-only rebake one node address changed: only plex layers rebuild
  by hand          the same plex layers with the incus CLI as a person would script it:
                   `incus launch` the package layer, `incus file push` every rendered file,
                   `incus exec` systemctl enable + the recipe's commands, `incus stop`,
                   `incus publish` (Incus's default compression), one role after another
and ratios against the by-hand baseline. No internet here: RKE2 comes from the STAND-IN release
(tests/fixtures) served on 127.0.0.1, through the same download code as the real one.

Usage: .venv/bin/python bench/bake.py [--network plexbr0] [--pool plex] [--keep-cache]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from plex.backends.incus.client import connect  # noqa: E402
from plex.model.image import package_alias  # noqa: E402
from plex.model.plex import IncusConfig, Plex, Role  # noqa: E402
from plex.plexfile.load import parse_plex  # noqa: E402
from plex.services.bake import Baker, Paths, plan_recipes  # noqa: E402


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def bench_plex(project: str, pool: str, network: str, release_url: str, agent_offset: int) -> Plex:
    data = yaml.safe_load((ROOT / "plexes/demo.yaml").read_text())
    data["incus"].update(project=project, pool=pool, network=network)
    data["kubernetes"]["release_url"] = release_url
    data["roles"]["agent"]["offset"] = agent_offset
    return parse_plex(yaml.safe_dump(data), "bench demo")


def by_hand(plex: Plex, project: str, pool: str) -> float:
    """The plex layers of every role, scripted with the incus CLI."""
    recipes = plan_recipes(plex, list(Role), Paths.under(ROOT))
    start = time.monotonic()
    for role, recipe in recipes.items():
        name = f"byhand-{role.value}"
        p = ["--project", project]
        sh(
            "incus",
            "launch",
            package_alias(recipe.package.digest),
            name,
            *p,
            "--no-profiles",
            "-s",
            pool,
        )
        with tempfile.TemporaryDirectory() as d:
            for f in recipe.layer.files:
                local = Path(d) / f.path.lstrip("/").replace("/", "_")
                local.write_bytes(f.content)
                sh(
                    "incus",
                    "file",
                    "push",
                    "--create-dirs",
                    "--mode",
                    f"{f.mode:04o}",
                    str(local),
                    f"{name}{f.path}",
                    *p,
                )
        sh(
            "incus",
            "exec",
            name,
            *p,
            "--",
            "systemctl",
            "--root=/",
            "enable",
            *recipe.layer.services,
        )
        for cmd in recipe.layer.commands:
            sh("incus", "exec", name, *p, "--", "sh", "-ec", cmd)
        sh("incus", "stop", "--force", name, *p)
        sh("incus", "publish", name, *p, "--alias", f"byhand/{role.value}")
        sh("incus", "delete", "--force", name, *p)
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="plexbr0")
    ap.add_argument("--pool", default="plex")
    ap.add_argument(
        "--keep-cache", action="store_true", help="reuse the machine's layer cache (no cold bake)"
    )
    args = ap.parse_args()

    from tests.fixtures.build_standin import build_standin_rke2
    from tests.fixtures.release_server import serve_directory
    from tests.fixtures.throwaway_projects import claim, release

    project = f"plex-bench-{uuid.uuid4().hex[:6]}"
    cfg = IncusConfig(project=project, pool=args.pool, network=args.network)
    for gone in claim(cfg, project):
        print(f"deleted {gone}: a killed bench or test session left it", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLEX_STATE_DIR"] = f"{tmp}/state"
        if not args.keep_cache:
            os.environ["PLEX_CACHE_DIR"] = f"{tmp}/cache"  # cold: nothing cached
        build_standin_rke2(Path(tmp) / "release")
        incus = connect(cfg)
        try:
            with serve_directory(Path(tmp) / "release") as srv:
                plex = bench_plex(project, args.pool, args.network, srv.url, 31)
                moved = bench_plex(project, args.pool, args.network, srv.url, 41)
                roles = list(Role)

                def bake(p: Plex) -> list:  # type: ignore[type-arg]
                    return Baker(p, incus, Paths.under(ROOT)).bake(roles)

                res: dict[str, float] = {}
                res["cold bake"] = timed(lambda: bake(plex))
                res["no-op bake"] = timed(lambda: bake(plex))
                res["data-only rebake"] = timed(lambda: bake(moved))
                res["by hand (plex layers, incus CLI)"] = by_hand(plex, project, args.pool)
        finally:
            incus.delete_project()
            release(project)

    base = res["by hand (plex layers, incus CLI)"]
    print(f"bake benchmark: demo plex, 4 roles, Incus pool {args.pool} ({time.strftime('%F %T')})")
    print(f"{'measure':36} {'seconds':>9} {'vs by hand':>11}")
    for k, v in res.items():
        print(f"{k:36} {v:9.2f} {v / base:10.2f}x")
    print(f"by hand / data-only rebake: {base / res['data-only rebake']:.1f}x faster with plex")
    print(f"by hand / no-op bake:       {base / res['no-op bake']:.0f}x faster with plex")
    print(
        "cold bake includes 3 mmdebstrap package layers (server+agent share one); the by-hand "
        "run reuses plex's package layers, so it is only the plex-layer part of a bake"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
