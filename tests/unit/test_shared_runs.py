"""One probe command asked by many probers at once runs once for all, each prober still
getting only runs that started after its previous attempt."""

from __future__ import annotations

import threading
import time

import pytest

from plex.backends.incus.protocol import ExecResult
from plex.deploy.probes import Probe, run_probe
from plex.deploy.shared_runs import SharedRuns
from plex.errors import BackendError, ProbeError
from tests.fixtures.fake_incus import FakeIncus


class NodeTable:
    """`kubectl get nodes` on the master (a FakeIncus.on_exec): the agents joined by now."""

    def __init__(self, joined_after: dict[str, float]) -> None:
        self.t0 = time.monotonic()
        self.joined_after = joined_after

    def __call__(self, name: str, argv: list[str]) -> ExecResult:
        now = time.monotonic() - self.t0
        rows = [
            f"{n}   Ready    <none>   1s    v1" for n, t in self.joined_after.items() if now >= t
        ]
        time.sleep(0.02)  # kubectl takes a while
        return ExecResult(0, "NAME   STATUS   ROLES   AGE   VERSION\n" + "\n".join(rows), "")


def test_many_agents_share_the_masters_runs_and_each_finds_its_own_row() -> None:
    agents = {f"demo-agent{i}": 0.1 + i * 0.01 for i in range(1, 33)}
    master = FakeIncus(on_exec=NodeTable(agents))
    master.add_instance("demo-server1")
    shared: SharedRuns[ExecResult] = SharedRuns()
    results = {}

    def probe(agent: str) -> None:
        p = Probe("node Ready", "kubectl get nodes", rf"(?m)^{agent}\s+Ready(,|\s)", 10.0)
        results[agent] = run_probe(master, "demo-server1", agent, p, shared=shared)

    threads = [threading.Thread(target=probe, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in results.values()) and set(results) == set(agents)
    attempts = sum(r.attempts for r in results.values())
    # Polled alone, every attempt would have been a kubectl run on the master.
    execs = [c for c in master.calls if c[0] == "exec"]
    assert {c[1] for c in execs} == {"demo-server1"}
    assert len(execs) == shared.runs < attempts / 4


def test_a_prober_never_gets_a_run_older_than_its_last_attempt() -> None:
    shared: SharedRuns[int] = SharedRuns()
    counter = iter(range(100))
    first, t1 = shared.run("k", 0.0, 0.0, lambda: next(counter))
    again, t2 = shared.run("k", t1, 0.0, lambda: next(counter))
    assert (first, again) == (0, 1) and t2 > t1
    # Another prober that began before run 1 started takes it as it is.
    assert shared.run("k", t1 - 1, 0.0, lambda: next(counter)) == (1, t2)
    # One that began after it gets a new run, once the spacing allows.
    begun = time.monotonic()
    value, t3 = shared.run("k", begun, 0.05, lambda: next(counter))
    assert value == 2 and t3 > begun and t3 >= t2 + 0.05


REFUSED = "Incus exec timeout in demo-agent32: Failed to retrieve PID of executing child process"


class Loaded:
    """An Incus under a heavy load: the first `refusals` execs fail."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult:
        if self.refusals > 0:
            self.refusals -= 1
            raise BackendError(REFUSED)
        return ExecResult(0, "running\n", "")


def test_an_exec_incus_refuses_is_a_failed_attempt_not_a_failed_probe() -> None:
    probe = Probe("systemd", "systemctl is-system-running", "^running$", 5.0)
    result = run_probe(Loaded(1), "demo-agent32", "demo-agent32", probe, sleep=lambda _: None)
    assert result.ok and result.attempts == 2
    clock = iter(range(0, 100, 3))
    with pytest.raises(ProbeError, match="Failed to retrieve PID"):  # until the timeout
        run_probe(Loaded(10**6), "x", "x", probe, clock=lambda: next(clock), sleep=lambda _: None)
