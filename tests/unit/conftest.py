"""Shared unit-test fixtures: the repo's plex files, an isolated state dir, the CLI in-process."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plex.__main__ import main

REPO = Path(__file__).resolve().parents[2]
PLEXES = REPO / "plexes"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


Cli = Callable[..., CliResult]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PLEX_STATE_DIR inside tmp_path: nothing touches the real ~/.local/state/plex."""
    d = tmp_path / "state"
    monkeypatch.setenv("PLEX_STATE_DIR", str(d))
    return d


@pytest.fixture
def plex_home(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Plex names (`demo`) resolve to the repo's plexes/ whatever the cwd."""
    monkeypatch.setenv("PLEX_HOME", str(REPO))
    return REPO


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """Run `plex ARGS...` through plex.__main__.main in-process, capturing stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # drop anything printed before this call
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return CliResult(code, out, err)

    # main() installs SIGINT/SIGTERM handlers; put pytest's back so Ctrl-C still stops the run.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield run
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
