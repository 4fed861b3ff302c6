#!/usr/bin/env python3
"""Reset benchmark: `plex reset` of the demo plex against the raw floor, in one run.

  plex reset     the master cascade (3 servers, the agents) with the current images: delete,
                 create, push host keys, start, probes, the other servers and the agents
                 joining together as soon as the new master is ready (etcd admits the
                 servers one at a time, RKE2 retrying each refused join every second)
  raw floor      the same kube nodes launched in parallel with the incus CLI from the same
                 images and instance config (no NIC: the plex's nodes hold those addresses),
                 waiting only until systemd is past sysinit: no probes, no ordering, no join
  snapshot reset `plex reset --to pristine`: every node restored from its pristine snapshot,
                 started in dependency order, probed (ratio against the cascade of the run)
  snapshot floor every node force-stopped, restored and started in parallel with the incus
                 CLI, waiting only until systemd is past sysinit: the least any snapshot reset
                 takes on this host (no RKE2, no order, no probes)
  rolling        a new image generation of server and agent rolled one node at a time (the
                 cluster stays), against the cascade of the same run

`--agents 64`: the agent-wave variant. The agent wave of the cascade is compared with the raw
floor of the agents alone (64 parallel create + start to sysinit of the same image); the peak
memory of this process and of the host is reported.

The plex is baked and deployed first (not measured). No internet here: RKE2 is the STAND-IN
release and docker.io a local stand-in upstream (tests/fixtures), as in the integration tests.
Medians over the runs are reported (the machine may be shared: say so with the figures).

Usage: .venv/bin/python bench/reset.py [--network plexbr0] [--pool plex] [--runs 3]
                                       [--agents N] [--no-snapshot] [--no-rolling]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from plex.backends.incus.client import connect  # noqa: E402
from plex.backends.incus.protocol import Incus  # noqa: E402
from plex.deploy.probes import ProbeResult  # noqa: E402
from plex.model import topology  # noqa: E402
from plex.model.plex import IncusConfig, Plex, Role  # noqa: E402
from plex.plexfile.load import parse_plex  # noqa: E402
from plex.services.bake import Baker, Paths  # noqa: E402
from plex.services.deploy import deploy, make_deploy_plan  # noqa: E402
from plex.services.destroy import destroy  # noqa: E402


def bench_plex(
    project: str, pool: str, network: str, release: str, upstream: str, agents: int | None = None
) -> Plex:
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
    if agents is not None:
        data["roles"]["agent"]["count"] = agents
        role = data["roles"]["agent"]
        role["capacity"] = max(agents, role.get("capacity", 0))
    if not (shutil.which("modprobe") and Path(f"/lib/modules/{platform.release()}").is_dir()):
        for role in ("server", "agent"):  # a kernel without loadable modules (CI sandboxes)
            data["roles"][role]["config"] = {"linux.kernel_modules": ""}
    return parse_plex(yaml.safe_dump(data), "bench demo")


def raw_floor(
    incus: Incus,
    plex: Plex,
    project: str,
    roles: tuple[Role, ...] = (Role.SERVER, Role.AGENT),
) -> float:
    """Launch the nodes' twins (of `roles`) in parallel with the incus CLI; wait for boot."""
    plan, _ = make_deploy_plan(plex, incus, replace=["master"])
    specs = [a.spec for a in plan.actions if a.spec is not None and a.role in roles]

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
        # Booted = past sysinit: without a NIC a node's RKE2 never finishes starting, so
        # "running" is out of reach for the floor. 64 at once on a small host take minutes:
        # the floor is what it is, not a failure.
        booted(name, project)

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


def booted(name: str, project: str, timeout: float = 900) -> None:
    """Until systemd in `name` is past sysinit (starting, running or degraded). An exec
    before the container's bus is up fails at once, so poll until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["incus", "exec", name, "--project", project, "--", "systemctl", "is-system-running"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if out in ("starting", "running", "degraded"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not boot")


def snapshot_floor(incus: Incus, plex: Plex, project: str) -> float:
    """The snapshot reset's own floor: every node of the plex (lbs and registry included)
    force-stopped together, then restored from its pristine snapshot and started, in
    parallel with the incus CLI, waiting only until systemd is past sysinit: no hold, no
    order, no probes. RKE2 starts as it boots, so the plex comes back (unprobed)."""
    from plex.services.pristine import snapshot_name
    from plex.services.snapshot import Snapshots

    observed = incus.observe(plex.name)
    stamp = Snapshots(plex, incus, ROOT).latest(observed)
    names = [n.name for n in topology.nodes(plex)]
    p = ["--project", project]
    start = time.monotonic()
    subprocess.run(["incus", "stop", "--force", *names, *p], check=True, capture_output=True)

    def one(name: str) -> None:
        snap = snapshot_name(observed.instances[name].image or "", stamp)
        subprocess.run(
            ["incus", "snapshot", "restore", name, snap, *p], check=True, capture_output=True
        )
        subprocess.run(["incus", "start", name, *p], check=True, capture_output=True)
        booted(name, project)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(one, names))
    return time.monotonic() - start


def probe_line(plex: Plex, probes: list[ProbeResult]) -> str:
    """node/probe seconds xattempts, for each probe (--timeline)."""
    return ", ".join(
        f"{p.node.removeprefix(plex.name + '-')}/{p.probe} {p.seconds:.1f}s x{p.attempts}"
        for p in probes
    )


class Memory(threading.Thread):
    """Peak memory in use on the host (MemTotal - MemAvailable), sampled every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0
        self.done = threading.Event()

    @staticmethod
    def used_mib() -> int:
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
        return (info["MemTotal"] - info["MemAvailable"]) // 1024

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak_mib = max(self.peak_mib, self.used_mib())


class Timeline:
    """What the deploy reports, per node, with the time since the run began (--timeline)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.events: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    def report(self, node: str, what: str) -> None:
        with self.lock:
            self.events.append((time.monotonic() - self.start, node, what))

    def lines(self, prefix: str) -> list[str]:
        by_node: dict[str, list[str]] = {}
        for t, node, what in self.events:
            by_node.setdefault(node.removeprefix(prefix), []).append(f"{t:.1f} {what}")
        return [f"  {node:10} " + " | ".join(steps) for node, steps in by_node.items()]


def new_generation(tmp: Path) -> Paths:
    """A copy of bake/ whose kube recipe gained a file: a new server and agent image."""
    bake = tmp / "bake-next"
    shutil.copytree(ROOT / "bake", bake, dirs_exist_ok=True)
    (bake / "templates" / "bench-generation.j2").write_text("next generation of {{ role }}\n")
    recipe = bake / "kube.yaml"
    recipe.write_text(
        recipe.read_text().replace(
            "files:\n",
            "files:\n  - {path: /etc/plex-bench-generation, template: bench-generation.j2}\n",
            1,
        )
    )
    return Paths(bake, ROOT / "images")


def agent_seconds(spans: dict[str, tuple[float, float]], plex: Plex) -> float:
    """The agent wave: from the first agent's start to the last agent's ready (agents start
    beside the other servers' joins, so no wave holds them alone)."""
    agents = [spans[n.name] for n in topology.nodes(plex) if n.role is Role.AGENT]
    return max(end for _, end in agents) - min(start for start, _ in agents)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="plexbr0")
    ap.add_argument("--pool", default="plex")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--agents",
        type=int,
        default=None,
        help="agents in the plex (the 64-agent variant: --agents 64)",
    )
    ap.add_argument("--no-snapshot", action="store_true", help="skip the snapshot reset")
    ap.add_argument("--no-rolling", action="store_true", help="skip the rolling replacement")
    ap.add_argument(
        "--timeline", action="store_true", help="print each reset's steps per node, timed"
    )
    args = ap.parse_args()

    from plex.services.snapshot import reset_to, take_snapshot
    from tests.fixtures.build_standin import build_standin_rke2
    from tests.fixtures.release_server import serve_directory
    from tests.fixtures.throwaway_projects import claim, release
    from tests.fixtures.upstream_registry import start_upstream

    project = f"plex-bench-{uuid.uuid4().hex[:6]}"
    for gone in claim(IncusConfig(project=project, pool=args.pool, network=args.network), project):
        print(f"deleted {gone}: a killed bench or test session left it", flush=True)
    resets: list[float] = []
    floors: list[float] = []
    agent_floors: list[float] = []
    snaps: list[float] = []
    snap_floors: list[float] = []  # restore + boot of every node, nothing else
    milestones: list[dict[str, float]] = []  # per snapshot reset: when each tier was ready
    rolling: list[float] = []
    waves: list[list[tuple[list[str], float]]] = []
    spans: list[dict[str, tuple[float, float]]] = []
    memory = Memory()
    memory.start()
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
                plex = bench_plex(project, args.pool, args.network, srv.url, up.url, args.agents)
                incus = connect(plex.incus)
                many = args.agents is not None and args.agents > 8
                try:
                    Baker(plex, incus, Paths.under(ROOT)).bake(list(Role))
                    deploy(plex, incus, ROOT)
                    if not args.no_snapshot:
                        take_snapshot(plex, incus, ROOT)
                    for _ in range(args.runs):
                        timeline = Timeline()
                        t = time.monotonic()
                        _, result = deploy(
                            plex, incus, ROOT, replace=["master"], report=timeline.report
                        )
                        resets.append(time.monotonic() - t)
                        if args.timeline:
                            print(f"reset {len(resets)}: {resets[-1]:.1f}s", flush=True)
                            print("\n".join(timeline.lines(plex.name + "-")), flush=True)
                            for w in result.waves:
                                print(
                                    f"  wave {w.index} {w.seconds:.1f}s: "
                                    + probe_line(plex, w.probes),
                                    flush=True,
                                )
                        waves.append([(w.nodes, w.seconds) for w in result.waves])
                        spans.append(result.spans)
                        if many:  # at once: a floor that fails later must not lose it
                            print(
                                f"reset {len(resets)}: {resets[-1]:.1f}s, agent wave "
                                f"{agent_seconds(spans[-1], plex):.1f}s (load "
                                f"{os.getloadavg()[0]:.1f})",
                                flush=True,
                            )
                        if many:
                            agent_floors.append(raw_floor(incus, plex, project, (Role.AGENT,)))
                        else:
                            floors.append(raw_floor(incus, plex, project))
                        if not args.no_snapshot:
                            # The cascade replaced the kube nodes (their snapshots went with
                            # them): keep the new state, then reset to it.
                            take_snapshot(plex, incus, ROOT)
                            snap_floors.append(snapshot_floor(incus, plex, project))
                            snap_timeline = Timeline()
                            t = time.monotonic()
                            restored = reset_to(
                                plex, incus, ROOT, "pristine", report=snap_timeline.report
                            )
                            snaps.append(time.monotonic() - t)
                            milestones.append(restored.phases)
                            if args.timeline:
                                print(f"snapshot reset {len(snaps)}: {snaps[-1]:.1f}s")
                                print("\n".join(snap_timeline.lines(plex.name + "-")), flush=True)
                                print(
                                    "  probes: " + probe_line(plex, restored.probes),
                                    flush=True,
                                )
                    if not args.no_rolling:
                        Baker(plex, incus, new_generation(Path(tmp))).bake(
                            [Role.SERVER, Role.AGENT]
                        )
                        t = time.monotonic()
                        plan, _ = deploy(plex, incus, ROOT)
                        rolling.append(time.monotonic() - t)
                        assert plan.strategy.value == "rolling", plan.why
                    destroy(plex, incus, everything=True)
                finally:
                    incus.delete_project()
                    release(project)
        finally:
            up.stop()
    memory.done.set()

    med = statistics.median
    kube = [n for n in topology.nodes(plex) if n.role.is_kube]
    load = os.getloadavg()
    print(
        f"reset benchmark: demo plex, {len(kube)} kube nodes, pool {args.pool}, median of "
        f"{args.runs} ({time.strftime('%F %T')}, load {load[0]:.1f} {load[1]:.1f} on "
        f"{os.cpu_count()} cores)"
    )
    print(f"{'measure':48} {'median s':>9}")

    def row(label: str, values: list[float]) -> None:
        print(f"{label:48} {med(values):9.2f}   runs: " + ", ".join(f"{r:.1f}" for r in values))

    row("plex reset (cascade: waves, keys, probes)", resets)
    if floors:
        row("raw floor (parallel incus launch + boot)", floors)
        print(f"ratio plex reset / raw floor: {med(resets) / med(floors):.2f}x")
    if agent_floors:
        agent_waves = [agent_seconds(s, plex) for s in spans]
        row(f"agent wave of the reset ({args.agents} agents)", agent_waves)
        row(f"raw floor ({args.agents} parallel create + start)", agent_floors)
        print(f"ratio agent wave / raw floor: {med(agent_waves) / med(agent_floors):.2f}x")
    if snaps:
        row("snapshot reset (plex reset --to pristine)", snaps)
        print(f"ratio snapshot reset / cascade reset: {med(snaps) / med(resets):.2f}x")
        row("snapshot floor (parallel restore + boot, CLI)", snap_floors)
        print(
            f"ratio snapshot floor / cascade reset: {med(snap_floors) / med(resets):.2f}x "
            "(the least a snapshot reset can take here); snapshot reset / snapshot floor: "
            f"{med(snaps) / med(snap_floors):.2f}x"
        )
        at = milestones[sorted(range(len(snaps)), key=lambda i: snaps[i])[len(snaps) // 2]]
        print(
            "snapshot reset milestones (median run): "
            + "; ".join(f"{k} {v:.1f}s" for k, v in sorted(at.items(), key=lambda kv: kv[1]))
        )
    if rolling:
        row("rolling replacement of every kube node", rolling)
        print(f"ratio rolling / cascade reset: {med(rolling) / med(resets):.2f}x")
    mid = sorted(range(len(resets)), key=lambda i: resets[i])[len(resets) // 2]

    def names(nodes: list[str]) -> str:
        if len(nodes) > 4:
            return f"{len(nodes)} nodes"
        return ",".join(n.removeprefix(plex.name + "-") for n in nodes)

    print(
        "plex reset waves (median run): "
        + "; ".join(f"{names(nodes)} {sec:.1f}s" for nodes, sec in waves[mid])
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    print(
        f"peak memory: plex (this process) {rss} MiB, host in use {memory.peak_mib} MiB of "
        f"{total} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
