"""plex's haproxy runtime-API client against a real haproxy process (no Incus needed): the
exact script plex runs inside an lb, talking to an admin socket configured like the lb's."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plex.lb import haproxy
from tests.fixtures.child_process import start_server

CONFIG = """global
    stats socket {sock} mode 600 level admin
    stats timeout 30s
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 1s
{backends}
"""
BACKEND = """backend {name}
    server demo-server1 127.0.0.1:{up} check inter 500ms fall 2 rise 1
    server demo-server2 127.0.0.1:1 check inter 500ms fall 2 rise 1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Path]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    up = listener.getsockname()[1]
    sock = tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        CONFIG.format(
            sock=sock, backends="".join(BACKEND.format(name=b, up=up) for b in haproxy.BACKENDS)
        )
    )
    proc = start_server([exe, "-db", "-f", str(cfg)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    try:
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)
        listener.close()


def ask(sock: Path, line: str) -> str:
    argv = haproxy.client_argv(line)
    argv[0] = sys.executable
    argv[argv.index(haproxy.SOCKET)] = str(sock)
    res = subprocess.run(argv, capture_output=True, text=True, check=True)
    return res.stdout


def states(sock: Path) -> dict[tuple[str, str], haproxy.ServerState]:
    return {(s.backend, s.server): s for s in haproxy.parse_state(ask(sock, haproxy.show_state()))}


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_maint_then_ready_through_the_runtime_api(running: Path) -> None:
    assert wait_for(lambda: all(states(running)[(b, "demo-server1")].up for b in haproxy.BACKENDS))
    answer = ask(running, haproxy.set_state(["demo-server1"], haproxy.State.MAINT))
    assert haproxy.errors(answer) == []
    now = states(running)
    assert all(
        now[(b, "demo-server1")].maint and not now[(b, "demo-server1")].up for b in haproxy.BACKENDS
    )
    assert (
        haproxy.errors(ask(running, haproxy.set_state(["demo-server1"], haproxy.State.READY))) == []
    )
    assert wait_for(lambda: all(states(running)[(b, "demo-server1")].up for b in haproxy.BACKENDS))
    # The server that never answered its checks is down, whatever its admin state. haproxy
    # starts a checked server UP and marks it down only after `fall 2` failed checks (~1 s),
    # so wait for that instead of racing it.
    assert wait_for(
        lambda: not any(states(running)[(b, "demo-server2")].up for b in haproxy.BACKENDS)
    )


def test_an_unknown_server_is_refused(running: Path) -> None:
    answer = ask(running, haproxy.set_state(["demo-server9"], haproxy.State.MAINT))
    assert "No such server." in haproxy.errors(answer)
