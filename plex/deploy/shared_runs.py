"""One probe command asked by many probes at once runs once for all of them.

The agents of a big wave all poll the same thing on the master (`kubectl get nodes`: is my
Node Ready?). Run per agent, 64 agents polling every second start 64 kubectl processes a
second inside the master, which is more than a small host's cores can run: the probes
themselves become the load that slows every boot. Shared, the command runs at most once per
poll interval on that node, and every prober reads its own answer from the same output.

Freshness is kept per prober: each attempt gets the output of a run that started after the
prober's previous attempt (or after the probe began), never an older one, so a probe still
passes only on what the node said after it started asking.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Run(Generic[T]):
    started: float
    done: threading.Event
    result: T | None = None
    error: BaseException | None = None


class SharedRuns(Generic[T]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[Any, _Run[T]] = {}  # the newest run per key (finished or not)
        self.runs = 0  # how many times a command really ran (for tests and reports)

    def run(self, key: Any, after: float, spacing: float, fn: Callable[[], T]) -> tuple[T, float]:
        """The output of a run of `key` that started after `after`, and when it started.
        Runs `fn` when no such run exists or is under way, at most once every `spacing`
        seconds per key (a prober that finds the last run too recent waits for the next)."""
        while True:
            mine = False
            with self._lock:
                last = self._last.get(key)
                now = self.clock()
                if last is not None and last.started > after:
                    run: _Run[T] | None = last  # fresh enough: under way or done
                elif last is not None and (not last.done.is_set() or now < last.started + spacing):
                    run = None  # too old, and running or too recent to run again
                else:
                    run = self._last[key] = _Run[T](now, threading.Event())
                    self.runs += 1
                    mine = True
            if run is None:
                assert last is not None
                if not last.done.is_set():
                    last.done.wait()
                else:
                    time.sleep(max(0.0, last.started + spacing - now))
                continue
            if mine:
                try:
                    run.result = fn()
                except BaseException as e:
                    run.error = e
                finally:
                    run.done.set()
            run.done.wait()
            if run.error is not None:
                raise run.error
            assert run.result is not None
            return run.result, run.started
