"""The test servers' child-process rules (tests/fixtures/child_process.py): a server ends with
the process that started it, and an address someone else serves is refused, not shared."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.child_process import refuse_if_served

ROOT = Path(__file__).resolve().parents[2]


def test_an_address_served_by_another_process_is_refused_naming_it() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} is already served"):
            refuse_if_served("127.0.0.1", port)
    refuse_if_served("127.0.0.1", port)  # free again


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    starter = (
        "import sys; from pathlib import Path; "
        "from tests.fixtures.child_process import start_server; "
        "p = start_server(['sleep', '120']); Path(sys.argv[1]).write_text(str(p.pid))"
    )
    subprocess.run([sys.executable, "-c", starter, str(pidfile)], check=True, cwd=ROOT)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"server {pid} outlived its starter"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Reaped by init once dead; a zombie counts as gone.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(") ", 1)[1][0] != "Z"
