"""A request Incus refuses because the member it is forwarded to is not reachable by events yet
(a member just back) is sent again until it is; every other error fails at once."""

from __future__ import annotations

from typing import Any

import pytest

from plex.backends.incus import rest
from plex.backends.incus.rest import IncusRest
from plex.errors import BackendError


class Resp:
    def __init__(self, code: int, error: str = "") -> None:
        self.status_code = code
        self.text = error

    def json(self) -> dict[str, Any]:
        return {"type": "error", "error": self.text} if self.status_code >= 400 else {}


class Session:
    def __init__(self, answers: list[Resp]) -> None:
        self.answers = answers
        self.sent = 0

    def request(self, *args: object, **kwargs: object) -> Resp:
        self.sent += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def client(answers: list[Resp]) -> tuple[IncusRest, Session]:
    c = IncusRest.__new__(IncusRest)  # no daemon: only request() is exercised
    c.base, c.project = "unix://x/1.0", "p"
    c.session = Session(answers)  # type: ignore[assignment]
    return c, c.session  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plex.backends.incus.rest.time.sleep", lambda _: None)


def test_a_member_not_ready_yet_is_waited_for() -> None:
    c, s = client(
        [Resp(500, "Server isn't ready yet"), Resp(500, "Server isn't ready yet"), Resp(200)]
    )
    resp = c.request("GET", "instances/multi-registry1/state", what="state of multi-registry1")
    assert resp is not None and resp.status_code == 200 and s.sent == 3


def test_it_gives_up_after_the_bound_with_incus_message(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr("plex.backends.incus.rest.time.monotonic", lambda: float(next(clock)))
    c, s = client([Resp(500, "Missing event connection with target cluster member")])
    with pytest.raises(BackendError, match="state of r1: Missing event connection"):
        c.request("GET", "instances/r1/state", what="state of r1")
    assert s.sent == rest.MEMBER_READY_WAIT / 10  # one try per 10 s of the fake clock


def test_other_errors_fail_at_once() -> None:
    c, s = client([Resp(500, "Instance is busy running a start operation")])
    with pytest.raises(BackendError, match="busy"):
        c.request("PUT", "instances/r1/state", what="start r1")
    assert s.sent == 1
