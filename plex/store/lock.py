"""Per-plex advisory locks: one bake and one deploy of a plex at a time.

fcntl locks die with their process, so a SIGKILLed plex never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plex.errors import LockedError
from plex.store.state import plex_dir, private_dir


def owner_id() -> str:
    """Identifies this process in Incus marks: `<pid>@<host>`."""
    return f"{os.getpid()}@{socket.gethostname()}"


@contextmanager
def plex_lock(plex_name: str, what: str) -> Iterator[Path]:
    path = private_dir(plex_dir(plex_name)) / f"{what}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "another process"
            raise LockedError(
                f"another {what} of plex '{plex_name}' is running ({holder})",
                hint="wait for it to finish; the lock is released when it exits",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, owner_id().encode())
        yield path
    finally:
        os.close(fd)


def process_alive(owner: str) -> bool:
    """Whether the process named by an `owner_id()` still runs (only decidable on this host)."""
    pid_s, _, host = owner.partition("@")
    if host != socket.gethostname():
        return True  # another host's bake: assume alive, never delete its work
    try:
        os.kill(int(pid_s), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
