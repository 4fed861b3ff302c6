"""A plan waits for Incus to finish what a killed plex left running in incusd (a create, a
delete): which operations count, the wait, its bound."""

from __future__ import annotations

from typing import Any

import pytest

from plex.backends.incus import observe
from plex.backends.incus.observe import Observe, instance_changes
from plex.errors import BackendError


def op(description: str, *instances: str) -> dict[str, Any]:
    # As Incus lists it (GET /1.0/operations?recursion=1: operations by status).
    urls = [f"/1.0/instances/{name}?project=lab" for name in instances]
    return {
        "class": "task",
        "description": description,
        "status": "Running",
        "resources": {"instances": urls},
    }


def test_only_running_changes_to_the_plexs_instances_count() -> None:
    ops = {
        "running": [
            op("Creating instance", "demo-agent2"),
            op("Executing command", "demo-server1"),  # changes no instance
            op("Deleting instance", "other-agent1"),  # another plex's
            op("Starting instance", "demo-lb1", "demo-lb2"),
        ],
        "success": [op("Deleting instance", "demo-agent1")],
    }
    assert instance_changes(ops, "demo") == [
        "Creating instance demo-agent2",
        "Starting instance demo-lb1",
        "Starting instance demo-lb2",
    ]
    assert instance_changes(None, "demo") == []


class Listing(Observe):
    """Observe with Incus's operation list scripted, one answer per GET."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.reads = 0

    def sync(self, method: str, path: str, **kw: Any) -> Any:
        assert (method, path, kw["params"]) == ("GET", "operations", {"recursion": "1"})
        self.reads += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_plan_waits_until_the_killed_runs_create_ended() -> None:
    incus = Listing([{"running": [op("Creating instance", "demo-agent2")]}] * 3 + [{}])
    slept: list[float] = []
    incus.wait_for_operations("demo", sleep=slept.append)
    assert incus.reads == 4 and slept == [observe.OPERATIONS_POLL] * 3


def test_the_wait_is_bounded_and_names_what_incus_still_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observe, "OPERATIONS_WAIT", 0.0)
    incus = Listing([{"running": [op("Deleting instance", "demo-server1")]}])
    with pytest.raises(
        BackendError,
        match=r"busy with plex 'demo' after 0s: Deleting "
        r"instance demo-server1$",
    ):
        incus.wait_for_operations("demo", sleep=lambda _: None)
