"""An exec Incus could not attach is run again; any other failure is not."""

from __future__ import annotations

import pytest

from plex.backends.incus.files import ATTACH_RETRIES, UNATTACHED, attached
from plex.errors import BackendError


def flaky(failures: int, message: str = f"Incus exec kubectl in demo-server1: {UNATTACHED}"):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def run() -> dict[str, object]:
        calls.append(1)
        if len(calls) <= failures:
            raise BackendError(message)
        return {"metadata": {"return": 0}}

    return run, calls


def test_an_unattached_exec_is_run_again_after_a_pause() -> None:
    run, calls = flaky(2)
    slept: list[float] = []
    assert attached(run, slept.append) == {"metadata": {"return": 0}}
    assert len(calls) == 3 and slept == list(ATTACH_RETRIES[:2])


def test_it_gives_up_with_incus_own_message() -> None:
    run, calls = flaky(99)
    slept: list[float] = []
    with pytest.raises(BackendError, match=UNATTACHED):
        attached(run, slept.append)
    assert len(calls) == len(ATTACH_RETRIES) + 1 and slept == list(ATTACH_RETRIES)


def test_other_failures_are_not_retried() -> None:
    run, calls = flaky(1, "Incus exec kubectl in demo-server1: Instance is not running")
    with pytest.raises(BackendError, match="not running"):
        attached(run, lambda _: None)
    assert len(calls) == 1
