"""Where plex keeps what it must not lose and must not commit: identity, catalog, caches, locks.

`$PLEX_STATE_DIR`, else `$XDG_STATE_HOME/plex`, else `~/.local/state/plex`. Everything secret is
written 0600 inside 0700 directories, atomically (write a temporary file, then rename), so a
killed plex never leaves a half-written key or catalog.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def state_root() -> Path:
    if d := os.environ.get("PLEX_STATE_DIR"):
        return Path(d)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "plex"


def cache_root() -> Path:
    """Downloads and package layers: large, re-creatable, shared by all plexes."""
    if d := os.environ.get("PLEX_CACHE_DIR"):
        return Path(d)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "plex"


def plex_dir(plex_name: str) -> Path:
    return state_root() / plex_name


def private_dir(path: Path) -> Path:
    """Create `path` with mode 0700, and every missing parent with 0700 too.

    (`mkdir(parents=True, mode=...)` applies the mode to the leaf only.)
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700)
        p.chmod(0o700)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> bool:
    """Atomically write `data` with `mode`; returns False (and writes nothing) if unchanged."""
    raw = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == raw:
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
        return False
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
