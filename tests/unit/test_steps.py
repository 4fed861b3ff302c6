"""The step runner: each step starts once the steps it waits for are done, no sooner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from plex.errors import Interrupted, PlexError
from plex.services.steps import Step, run_steps


def test_a_step_starts_when_what_it_waits_for_is_done_not_when_its_siblings_are() -> None:
    log: list[str] = []
    lock = threading.Lock()

    def step(name: str, seconds: float = 0.0) -> Callable[[], str]:
        def run() -> str:
            time.sleep(seconds)
            with lock:
                log.append(name)
            return name

        return run

    done = run_steps(
        [
            Step("master", step("master")),
            Step("agent", step("agent", 0.3), ["master"]),
            Step("server2", step("server2"), ["master"]),
            Step("server3", step("server3"), ["server2", "not-in-this-run"]),
        ],
        parallel=4,
        cancel=threading.Event(),
    )
    assert log == ["master", "server2", "server3", "agent"]
    assert {k: d.result for k, d in done.items()} == {k: k for k in log}
    assert done["server3"].started >= done["server2"].ended
    assert done["agent"].started >= done["master"].ended


def test_the_first_failure_stops_the_run_and_is_raised() -> None:
    cancel = threading.Event()
    ran: list[str] = []

    def fail() -> None:
        raise PlexError("node1: probe failed")

    def interrupted() -> None:
        while not cancel.is_set():
            time.sleep(0.01)
        raise Interrupted("deploy cancelled")

    with pytest.raises(PlexError, match="probe failed"):
        run_steps(
            [
                Step("node1", fail),
                Step("node2", interrupted),
                Step("node3", lambda: ran.append("node3"), ["node1"]),
            ],
            parallel=2,
            cancel=cancel,
        )
    assert cancel.is_set()
    assert ran == []
