"""Health probes: per-role checks a node must pass before its wave is done.

Definitions are data (deploy/probes.yaml). Probes run inside the nodes through the Incus
backend (no SSH or routing from the plex host needed), retried until their timeout; a probe
that times out raises ProbeError naming the node, the probe and its last output.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plex.deploy.shared_runs import SharedRuns
from plex.errors import BackendError, ProbeError
from plex.model import topology
from plex.model.identity import Identity
from plex.model.plex import Engine, Plex, Role
from plex.model.probe_file import ProbeEntry, ProbesFile
from plex.model.record import record_json
from plex.model.topology import Node
from plex.plexfile.yamlfile import load_model

KUBECTL = "/var/lib/rancher/rke2/bin/kubectl"
KUBECONFIG = "/etc/rancher/rke2/rke2.yaml"
FIRST_RETRY = 0.25  # seconds before a probe's second attempt; doubling up to its interval


class Executor(Protocol):
    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Any: ...


@dataclass(frozen=True)
class Probe:
    name: str
    run: str
    expect: str | None = None
    timeout: float = 60.0
    interval: float = 1.0
    runs_on: str = "self"  # self | master (`on:` would be YAML 1.1's boolean True)
    per_port: bool = False
    per_upstream: bool = False
    first: bool = False  # the node's other probes wait for this one (see deploy/probes.yaml)


@dataclass(frozen=True)
class ProbeResult:
    node: str
    probe: str
    ok: bool
    seconds: float
    output: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return record_json(self, output=self.output[-200:])


@dataclass(frozen=True)
class ProbeSet:
    common: tuple[Probe, ...]
    roles: dict[str, tuple[Probe, ...]] = field(default_factory=dict)

    def for_role(self, role: Role) -> tuple[Probe, ...]:
        return (*self.common, *self.roles.get(role.value, ()))


def load_probes(path: Path) -> ProbeSet:
    """deploy/probes.yaml; ConfigErrors (file:line: field) for a broken one."""
    probes = load_model(path, ProbesFile, "probes file")[0]

    def parse(entries: tuple[ProbeEntry, ...]) -> tuple[Probe, ...]:
        return tuple(Probe(**e.model_dump()) for e in entries)

    return ProbeSet(parse(probes.common), {r.value: parse(v) for r, v in probes.roles.items()})


def registry_ports(plex: Plex) -> list[int]:
    if plex.registry.engine is Engine.ZOT:
        return [plex.registry.port]
    return [plex.registry.port + i for i in range(len(plex.registry.upstreams))]


def variables(plex: Plex, node: Node, identity: Identity) -> dict[str, str]:
    keys = identity.host_keys(node.name)
    return {
        "node": node.name,
        "address": node.address,
        "vip": plex.network.vip or "",
        "api": topology.api_address(plex),
        "ed25519": re.escape(keys["ed25519"].public_key),
        "rsa": re.escape(keys["rsa"].public_key),
        "kubectl": KUBECTL,
        "kubeconfig": KUBECONFIG,
    }


def upstream_variables(plex: Plex) -> list[tuple[str, dict[str, str]]]:
    """(upstream name, {upstream}, {upstream_url} (its /v2/ endpoint), {curl_tls}) per
    upstream: what a probe needs to check the registry node's way out to each one."""
    out = []
    for u in plex.registry.upstreams:
        base = u.url.rstrip("/")
        v2 = base if base.endswith("/v2") else f"{base}/v2"
        out.append(
            (
                u.name,
                {
                    "upstream": u.name,
                    "upstream_url": f"{v2}/",
                    "curl_tls": "" if u.tls_verify else "-k",
                },
            )
        )
    return out


def expand(probe: Probe, plex: Plex, node: Node, identity: Identity) -> list[tuple[str, Probe]]:
    """(label, probe with variables filled) pairs; per_port probes give one per registry port,
    per_upstream probes one per registry upstream."""
    v = variables(plex, node, identity)
    ports = registry_ports(plex) if probe.per_port else [0]
    ups = upstream_variables(plex) if probe.per_upstream else [("", {})]
    out = []
    for port in ports:
        for up_name, up_vars in ups:
            vv = {**v, "port": str(port), **up_vars}
            run = probe.run.format(**vv)
            expect = probe.expect.format(**vv) if probe.expect else None
            label = probe.name if not probe.per_port else f"{probe.name} :{port}"
            label = f"{label} {up_name}" if up_name else label
            out.append(
                (label, Probe(label, run, expect, probe.timeout, probe.interval, probe.runs_on))
            )
    return out


Sleep = Callable[[float], None]


@dataclass(frozen=True)
class _Unrun:
    """An attempt Incus could not run (a failed attempt, retried like any other)."""

    stderr: str
    returncode: int = 255
    stdout: str = ""


def _attempt(incus: Executor, target: str, argv: list[str]) -> Any:
    """One run of a probe command. Incus refusing the exec (an instance not running yet, or
    under a heavy load "Failed to retrieve PID of executing child process") fails this
    attempt, not the probe: the probe retries until its timeout, then says why."""
    try:
        return incus.exec(target, argv)
    except BackendError as e:
        return _Unrun(e.message)


def run_probe(
    incus: Executor,
    target: str,
    node: str,
    probe: Probe,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = time.sleep,
    cancelled: Callable[[], bool] = lambda: False,
    shared: SharedRuns[Any] | None = None,
) -> ProbeResult:
    """Retry `probe` in `target` until it passes or times out (then ProbeError). `shared`:
    the same command in the same target, asked by other probes at once, runs once for all
    (plex.deploy.shared_runs), every attempt still on a run newer than its previous one."""
    start = clock()
    after = shared.clock() if shared is not None else 0.0
    attempts = 0
    last = ""
    pattern = re.compile(probe.expect) if probe.expect else None
    while True:
        attempts += 1
        # Bound each attempt by the time left: a probe command that blocks (systemctl --wait on
        # a node stuck booting) must not outlive the probe's timeout.
        left = max(1, int(probe.timeout - (clock() - start)) + 1)
        argv = ["timeout", str(left), "/bin/sh", "-c", probe.run]
        attempt = functools.partial(_attempt, incus, target, argv)
        if shared is None:
            res = attempt()
        else:
            res, after = shared.run((target, probe.run), after, FIRST_RETRY, attempt)
        out = res.stdout.strip()
        text = (out + ("\n" + res.stderr.strip() if res.stderr.strip() else "")).strip()
        # The last attempt that said something: a final attempt cut short by the timeout
        # says nothing, and what the node said before is why it is failing.
        last = text or last
        if res.returncode == 0 and (pattern is None or pattern.search(out)):
            return ProbeResult(node, probe.name, True, clock() - start, out, attempts)
        if clock() - start >= probe.timeout or cancelled():
            raise ProbeError(
                f"{node}: probe '{probe.name}' failed after {clock() - start:.0f}s "
                f"({attempts} attempts); last output: {last[-600:] or '(none)'} "
                f"[exit {res.returncode}]",
                hint=f"inspect with: incus exec {target} -- sh -c {probe.run!r}",
            )
        # Quick retries first (a node that just started answers within a second or two), then
        # every `interval`; never past the timeout.
        wait = min(probe.interval, FIRST_RETRY * 2 ** (attempts - 1))
        sleep(max(0.0, min(wait, probe.timeout - (clock() - start))))


def in_turn(probes: Sequence[Probe]) -> tuple[list[Probe], list[Probe]]:
    """The probes marked `first` (a node's others wait for them), then the others; each in
    listed order."""
    return [p for p in probes if p.first], [p for p in probes if not p.first]


def probe_node(
    incus: Executor,
    plex: Plex,
    node: Node,
    identity: Identity,
    probes: ProbeSet,
    cancelled: Callable[[], bool] = lambda: False,
    instances: Mapping[str, str] | None = None,
    shared: SharedRuns[Any] | None = None,
) -> list[ProbeResult]:
    """`instances`: node -> instance for nodes not named after theirs (evacuated copies).
    `shared`: probes run on the master share their runs with other nodes' (see run_probe)."""
    where = instances or {}
    master = topology.master(plex)
    results = []
    first, rest = in_turn(probes.for_role(node.role))
    for p in [*first, *rest]:
        for _, concrete in expand(p, plex, node, identity):
            on = master.name if concrete.runs_on == "master" else node.name
            target = where.get(on, on)
            share = shared if concrete.runs_on == "master" else None
            results.append(
                run_probe(incus, target, node.name, concrete, cancelled=cancelled, shared=share)
            )
    return results


def upstream_probes(plex: Plex, identity: Identity, probes: ProbeSet) -> list[Probe]:
    """The registry node's per-upstream probes (its way out to every upstream), concrete."""
    node = topology.registry_node(plex)
    if node is None:
        return []
    return [
        c
        for p in probes.for_role(Role.REGISTRY)
        if p.per_upstream
        for _, c in expand(p, plex, node, identity)
    ]


def vip_holders(
    incus: Executor, plex: Plex, lbs: Sequence[Node], instances: Mapping[str, str] | None = None
) -> list[str]:
    vip = plex.network.vip
    holders = []
    for n in lbs:
        argv = ["ip", "-o", "-4", "addr", "show", "dev", plex.network.interface]
        res = incus.exec((instances or {}).get(n.name, n.name), argv)
        if vip and re.search(rf"inet {re.escape(vip)}/", res.stdout):
            holders.append(n.name)
    return holders


def probe_vip(
    incus: Executor,
    plex: Plex,
    timeout: float = 30.0,
    sleep: Sleep = time.sleep,
    instances: Mapping[str, str] | None = None,
) -> ProbeResult:
    """Wave probe for lb: the VIP is held by exactly one lb."""
    # Only the lbs that exist: waves create them one at a time so the VIP stays up.
    present = set(incus.instance_names()) if hasattr(incus, "instance_names") else None
    where = instances or {}
    lbs = [
        n
        for n in topology.nodes(plex)
        if n.role is Role.LB and (present is None or where.get(n.name, n.name) in present)
    ]
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        holders = vip_holders(incus, plex, lbs, where)
        if len(holders) == 1:
            return ProbeResult(
                holders[0],
                "VIP held by one lb",
                True,
                time.monotonic() - start,
                holders[0],
                attempts,
            )
        if time.monotonic() - start > timeout:
            raise ProbeError(
                f"VIP {plex.network.vip} is held by {len(holders)} lb nodes "
                f"({', '.join(holders) or 'none'}) after {timeout:.0f}s",
                hint="check keepalived on the lb nodes (journalctl -u keepalived)",
            )
        sleep(1.0)
