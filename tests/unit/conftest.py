"""Shared unit-test fixtures: the repo's plex files, an isolated state dir, the CLI in-process."""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --- The network guard --------------------------------------------------------------------------
# Unit tests need no network but loopback. Two slips in the past came from unit tests (a planned
# VM node's SSH probe dialled the plex's real address range; a bake fetched a release checksum
# from github.com): so inside this process, every connect to an address that is not loopback and
# every lookup of a name that is not local is refused, and the test that tried it fails. Child
# processes are not covered; they are started on loopback by the tests that need them.
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_attempts: list[str] = []


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in net for net in _LOOPBACK)


def _guarded_connect(connect: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(self: socket.socket, address: Any, *args: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(str(address[0])):
            _attempts.append(f"connect to {address[0]}:{address[1]}")
            raise OSError(errno.ENETUNREACH, f"unit tests reach only loopback, not {address[0]}")
        return connect(self, address, *args)

    return guarded


_real_getaddrinfo = socket.getaddrinfo  # taken at import, before any guard


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name.lower() not in _LOCAL_NAMES and name != socket.gethostname():
        try:
            ipaddress.ip_address(str(name).split("%", 1)[0])
        except ValueError:
            _attempts.append(f"lookup of {name}")
            message = f"unit tests resolve no name: {name}"
            raise socket.gaierror(socket.EAI_NONAME, message) from None
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def _loopback_only() -> Iterator[None]:
    """Guard every unit module, its module fixtures included; restored after it, so the
    integration tests of the same run (which reach the bridge) are not touched."""
    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)
    socket.socket.connect = _guarded_connect(saved[0])  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect(saved[1])  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = saved  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _no_traffic_off_this_machine(_loopback_only: None) -> Iterator[None]:
    """Fail the test that tried to reach beyond loopback, even when it caught the refusal."""
    _attempts.clear()
    yield
    tried, _attempts[:] = list(_attempts), []
    assert not tried, f"the test tried to leave the machine: {', '.join(tried)}"


@pytest.fixture
def network_attempts() -> list[str]:
    """What the guard refused in this test so far (a test of the guard clears it)."""
    return _attempts
