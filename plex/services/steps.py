"""Run steps as their dependencies allow: each starts the moment every step it waits for is
done, up to `parallel` at once, so no step waits for work it does not need.

The first step that fails stops the run: `cancel` is set (running steps see it and stop early,
e.g. a probe between attempts), nothing new starts, and its error is raised once the running
steps have returned; an Interrupted (a step that saw the cancel) is raised only when nothing
else failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from plex.errors import Interrupted, PlexError

T = TypeVar("T")


@dataclass(frozen=True)
class Step(Generic[T]):
    key: str
    run: Callable[[], T]
    after: Collection[str] = ()


@dataclass(frozen=True)
class Done(Generic[T]):
    result: T
    started: float  # seconds since the run began
    ended: float


def run_steps(steps: list[Step[T]], parallel: int, cancel: threading.Event) -> dict[str, Done[T]]:
    """Every step's result with when it ran. A step waiting for a key that is not a step of
    the run waits for nothing (that work is not part of it)."""
    keys = {s.key for s in steps}
    waiting = {s.key: s for s in steps}
    done: dict[str, Done[T]] = {}
    running: dict[Future[Done[T]], str] = {}
    errors: list[PlexError] = []
    start = time.monotonic()

    def timed(step: Step[T]) -> Done[T]:
        t0 = time.monotonic() - start
        result = step.run()
        return Done(result, t0, time.monotonic() - start)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        while waiting or running:
            if not errors and not cancel.is_set():
                for key, step in list(waiting.items()):
                    if all(k in done for k in step.after if k in keys):
                        del waiting[key]
                        running[pool.submit(timed, step)] = key
            if not running:
                break  # failed or cancelled: what still waits never starts
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                try:
                    done[key] = fut.result()
                except PlexError as e:
                    errors.append(e)
                    cancel.set()
                except BaseException:
                    cancel.set()
                    raise
    if errors:
        errors.sort(key=lambda e: isinstance(e, Interrupted))
        raise errors[0]
    if waiting:
        raise Interrupted("deploy cancelled")
    return done
