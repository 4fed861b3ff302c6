"""The shipped probe definitions load, and probes retry until their timeout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plex.backends.incus.protocol import ExecResult
from plex.deploy.probes import Probe, ProbeSet, expand, load_probes, probe_node, run_probe
from plex.errors import ConfigErrors, ProbeError
from plex.model.plex import Plex, Role
from plex.model.topology import resolve
from plex.plexfile.load import load_plex
from plex.store.identity import ensure_identity
from tests.fixtures.fake_incus import FakeIncus, replies

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_probes_load_for_every_role() -> None:
    probes = load_probes(ROOT / "deploy" / "probes.yaml")
    for role in Role:
        names = [p.name for p in probes.for_role(role)]
        assert "systemd" in names and "sshd host key" in names
    agent = {p.name: p for p in probes.for_role(Role.AGENT)}
    assert agent["node Ready"].runs_on == "master"


def test_probe_variables_are_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    identity, _ = ensure_identity(plex)
    probes = load_probes(ROOT / "deploy" / "probes.yaml")
    reg = next(p for p in probes.for_role(Role.REGISTRY) if p.per_port)
    out = expand(reg, plex, resolve(plex, "demo-registry1"), identity)
    assert [p.run.split("127.0.0.1:")[1].split("/")[0] for _, p in out] == ["5000"]
    sshd = next(p for p in probes.common if p.name == "sshd host key")
    [(_, concrete)] = expand(sshd, plex, resolve(plex, "demo-lb1"), identity)
    assert concrete.expect is not None
    assert re.search(concrete.expect, identity.host_keys("demo-lb1")["ed25519"].public_key)
    assert not re.search(concrete.expect, identity.host_keys("demo-lb2")["ed25519"].public_key)


def test_unknown_probe_key_names_its_path(tmp_path: Path) -> None:
    f = tmp_path / "probes.yaml"
    f.write_text("common:\n  - {name: x, run: 'true', on: master}\n")
    with pytest.raises(
        ConfigErrors,
        match=r"probes.yaml:2: common\[0\]: the key True is not a string \(YAML reads on/off",
    ):
        load_probes(f)


def node(*answers: ExecResult) -> FakeIncus:
    """A running n1 answering its probe's runs with `answers`, in order."""
    fake = FakeIncus(on_exec=replies(*answers))
    fake.add_instance("n1")
    return fake


def test_probe_retries_until_it_passes() -> None:
    fake = node(ExecResult(1, "", ""), ExecResult(0, "starting", ""), ExecResult(0, "pong", ""))
    t = [0.0]
    res = run_probe(
        fake,
        "n1",
        "n1",
        Probe("ping", "curl", "^pong$", timeout=10),
        clock=lambda: t[0],
        sleep=lambda s: t.__setitem__(0, t[0] + s),
    )
    assert res.ok and res.attempts == 3 and res.output == "pong"


def test_probe_timeout_names_node_probe_and_last_output() -> None:
    fake = node(ExecResult(7, "", "connection refused"))
    t = [0.0]
    with pytest.raises(ProbeError, match=r"n1: probe 'ping' failed after 5s .*connection refused"):
        run_probe(
            fake,
            "n1",
            "n1",
            Probe("ping", "curl", "^pong$", timeout=5),
            clock=lambda: t[0],
            sleep=lambda s: t.__setitem__(0, t[0] + s),
        )


def test_probe_retries_quickly_first_then_every_interval() -> None:
    fake = node(*[ExecResult(1, "", "")] * 5, ExecResult(0, "pong", ""))
    t = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        t[0] += s

    run_probe(
        fake,
        "n1",
        "n1",
        Probe("ping", "curl", "^pong$", timeout=10, interval=1.0),
        clock=lambda: t[0],
        sleep=sleep,
    )
    assert waits == [0.25, 0.5, 1.0, 1.0, 1.0]


def _gated_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Plex, FakeIncus, ProbeSet, list[str]]:
    """demo-server1 booting: its `first` probe says "starting" twice, then "running"; every
    exec is logged as the probe it came from."""
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    ensure_identity(plex)
    boot = iter(["starting", "starting"])
    log: list[str] = []

    def on_exec(name: str, argv: list[str]) -> ExecResult:
        cmd = argv[-1]
        log.append(cmd)
        if cmd == "boot":
            return ExecResult(0, next(boot, "running") + "\n", "")
        return ExecResult(0, "ok\n", "")

    incus = FakeIncus(on_exec=on_exec)
    incus.add_instance("demo-server1")
    # Listed last, run first: `first` orders, not the list.
    probes = ProbeSet(
        (
            Probe("ports", "ports", "^ok$", timeout=5, interval=0.01),
            Probe("key", "key", "^ok$", timeout=5, interval=0.01),
            Probe("boot", "boot", "^running$", timeout=5, interval=0.01, first=True),
        ),
        {"server": (Probe("ping", "ping", "^ok$", timeout=5, interval=0.01),)},
    )
    return plex, incus, probes, log


def test_a_nodes_other_probes_wait_for_its_first_ones_in_a_cold_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probed from outside, a node still booting costs an Incus exec per attempt (CPU the boot
    needs): nothing but the `first` probe runs until it passed; then the rest, at once."""
    from plex.services.cold_start import ColdStart

    plex, incus, probes, log = _gated_world(tmp_path, monkeypatch)
    cold = ColdStart(plex, incus, probes, lambda node, what: None, parallel=4)
    results = cold.probe(resolve(plex, "demo-server1"))
    assert log[:3] == ["boot"] * 3
    assert sorted(log[3:]) == ["key", "ping", "ports"]
    assert [r.probe for r in results] == ["boot", "ports", "key", "ping"]
    assert [r.attempts for r in results] == [3, 1, 1, 1]


def test_a_deploy_runs_a_nodes_first_probes_before_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plex, incus, probes, log = _gated_world(tmp_path, monkeypatch)
    identity, _ = ensure_identity(plex)
    results = probe_node(incus, plex, resolve(plex, "demo-server1"), identity, probes)
    assert log == ["boot"] * 3 + ["ports", "key", "ping"]
    assert [r.probe for r in results] == ["boot", "ports", "key", "ping"]


def test_the_shipped_systemd_probe_goes_first() -> None:
    probes = load_probes(ROOT / "deploy" / "probes.yaml")
    for role in Role:
        assert [p.name for p in probes.for_role(role) if p.first] == ["systemd"]
