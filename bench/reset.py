#!/usr/bin/env python3
"""Reset benchmark: `plex reset` of the demo plex against the raw floor, in one run.

  plex reset   the master cascade (3 servers, 2 agents) with the current images: delete,
               create, push host keys, start, probes, servers joining one at a time
  raw floor    the same 5 nodes launched in parallel with the incus CLI from the same images
               and instance config (no NIC: the plex's nodes hold those addresses), waiting
               only until systemd is past sysinit: no probes, no ordering, no cluster join

The plex is baked and deployed first (not measured). No internet here: RKE2 is the STAND-IN
release and docker.io a local stand-in upstream (tests/fixtures), as in the integration tests.

Usage: .venv/bin/python bench/reset.py [--network plexbr0] [--pool plex] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from plex.backends.incus import connect  # noqa: E402
from plex.model import topology  # noqa: E402
from plex.model.plex import Plex, Role  # noqa: E402
from plex.plexfile.load import parse_plex  # noqa: E402
from plex.services.bake import Baker, Paths  # noqa: E402
from plex.services.deploy import deploy, make_deploy_plan  # noqa: E402
from plex.services.destroy import destroy  # noqa: E402


def bench_plex(project: str, pool: str, network: str, release: str, upstream: str) -> Plex:
    import platform
    import shutil

    data = yaml.safe_load((ROOT / "plexes/demo.yaml").read_text())
    data["incus"].update(project=project, pool=pool, network=network)
    gw = (
        subprocess.run(
            ["incus", "network", "get", network, "ipv4.address"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split("/")[0]
    )
    net = gw.rsplit(".", 1)[0]
    data["network"].update(cidr=f"{net}.0/24", gateway=gw, dns=[gw], vip=f"{net}.10")
    data["kubernetes"]["release_url"] = release
    data["registry"]["upstreams"] = [{"name": "docker.io", "url": upstream}]
    if not (shutil.which("modprobe") and Path(f"/lib/modules/{platform.release()}").is_dir()):
        for role in ("server", "agent"):  # a kernel without loadable modules (CI sandboxes)
            data["roles"][role]["config"] = {"linux.kernel_modules": ""}
    return parse_plex(yaml.safe_dump(data), "bench demo")


def raw_floor(incus, plex: Plex, project: str) -> float:  # type: ignore[no-untyped-def]
    """Launch the kube nodes' twins in parallel with the incus CLI; wait for boot."""
    plan, _ = make_deploy_plan(plex, incus, replace=["master"])
    specs = [
        a.spec for a in plan.actions if a.spec is not None and a.role is not None and a.role.is_kube
    ]

    def one(spec) -> None:  # type: ignore[no-untyped-def]
        # As a person would script it: init with the config, add the devices, start, wait.
        name = f"floor-{spec.name}"
        p = ["--project", project]
        argv = ["incus", "init", spec.image, name, *p, "--no-profiles", "-s", plex.incus.pool]
        for k, v in spec.config.items():
            if not k.startswith("user."):
                argv += ["-c", f"{k}={v}"]
        subprocess.run(argv, check=True, capture_output=True)
        for dev, cfg in spec.devices.items():
            if cfg.get("type") == "nic" or dev == "root":
                continue  # the plex's nodes hold these addresses: boot without a NIC
            subprocess.run(
                [
                    "incus",
                    "config",
                    "device",
                    "add",
                    name,
                    dev,
                    cfg["type"],
                    *(f"{k}={v}" for k, v in cfg.items() if k != "type"),
                    *p,
                ],
                check=True,
                capture_output=True,
            )
        subprocess.run(["incus", "start", name, *p], check=True, capture_output=True)
        # Booted = systemd is past sysinit (starting, running or degraded). Without a NIC a
        # node's RKE2 never finishes starting, so "running" is out of reach for the floor; an
        # exec before the container's bus is up fails at once, so poll until it answers.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["incus", "exec", name, *p, "--", "systemctl", "is-system-running"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if out in ("starting", "running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not boot")

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        list(pool.map(one, specs))
    elapsed = time.monotonic() - start
    for spec in specs:
        subprocess.run(
            ["incus", "delete", "--force", f"floor-{spec.name}", "--project", project],
            capture_output=True,
        )
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="plexbr0")
    ap.add_argument("--pool", default="plex")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    from tests.fixtures.build_standin import build_standin_rke2
    from tests.fixtures.release_server import serve_directory
    from tests.fixtures.upstream_registry import start_upstream

    project = f"plex-bench-{uuid.uuid4().hex[:6]}"
    resets: list[float] = []
    floors: list[float] = []
    waves: list[list[tuple[list[str], float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLEX_STATE_DIR"] = f"{tmp}/state"
        build_standin_rke2(Path(tmp) / "release")
        gw = subprocess.run(
            ["incus", "network", "get", args.network, "ipv4.address"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("/")[0]
        up = start_upstream(Path(tmp) / "upstream", gw.strip(), 5597)
        try:
            with serve_directory(Path(tmp) / "release") as srv:
                plex = bench_plex(project, args.pool, args.network, srv.url, up.url)
                incus = connect(plex.incus)
                try:
                    Baker(plex, incus, Paths.under(ROOT)).bake(list(Role))
                    deploy(plex, incus, ROOT)
                    for _ in range(args.runs):
                        t = time.monotonic()
                        _, result = deploy(plex, incus, ROOT, replace=["master"])
                        resets.append(time.monotonic() - t)
                        waves.append([(w.nodes, w.seconds) for w in result.waves])
                        floors.append(raw_floor(incus, plex, project))
                    destroy(plex, incus, everything=True)
                finally:
                    incus.delete_project()
        finally:
            up.stop()

    kube = [n for n in topology.nodes(plex) if n.role.is_kube]
    best_reset, best_floor = min(resets), min(floors)
    print(
        f"reset benchmark: demo plex, {len(kube)} kube nodes replaced, pool {args.pool}, "
        f"best of {args.runs} ({time.strftime('%F %T')})"
    )
    print(f"{'measure':44} {'seconds':>9}")
    print(
        f"{'plex reset (waves, keys, probes)':44} {best_reset:9.2f}   runs: "
        + ", ".join(f"{r:.1f}" for r in resets)
    )
    print(
        f"{'raw floor (parallel incus launch + boot)':44} {best_floor:9.2f}   runs: "
        + ", ".join(f"{r:.1f}" for r in floors)
    )
    print(f"ratio plex reset / raw floor: {best_reset / best_floor:.2f}x")
    best = waves[resets.index(best_reset)]
    print(
        "plex reset waves (best run): "
        + "; ".join(
            f"{','.join(n.removeprefix(plex.name + '-') for n in nodes)} {sec:.1f}s"
            for nodes, sec in best
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
