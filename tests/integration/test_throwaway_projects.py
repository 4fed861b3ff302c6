"""The projects a killed session leaves on real Incus are deleted by the next session, and
those of a session still running are not (tests/fixtures/throwaway_projects.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.child_process import die_with_parent
from tests.fixtures.throwaway_projects import LOCKS, reap

from .conftest import ROOT

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from plex.model.plex import IncusConfig

pytestmark = pytest.mark.incus

# A session in a child process: it claims its project, puts a (never started) instance holding
# an address on the bridge in it and in a project of its own, then waits to be killed.
SESSION = """
import sys, time
from plex.backends.incus.client import connect
from plex.model.plex import IncusConfig
from tests.fixtures.throwaway_projects import claim
project, pool, network = sys.argv[1:4]
cfg = IncusConfig(project=project, pool=pool, network=network)
claim(cfg, project)
for name in (project, project + "-other"):
    connect(cfg, name).create_instance(
        "leftover", image="", source={"type": "none"}, profiles=["default"], config={},
        devices={"root": {"type": "disk", "path": "/", "pool": pool},
                 "eth0": {"type": "nic", "network": network}},
    )
print("ready", flush=True)
time.sleep(600)
"""


def _session(cfg: IncusConfig) -> tuple[subprocess.Popen[str], str]:
    project = f"plex-test-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", SESSION, project, cfg.pool, cfg.network],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=die_with_parent,  # a failed test does not leave it holding its lock
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child, project


def _projects(incus: PylxdIncus) -> set[str]:
    from plex.backends.incus.rest import names

    return set(names(incus.sync("GET", "projects", project=False)))


def test_a_killed_sessions_projects_go_and_a_live_ones_stay(
    incus: PylxdIncus, incus_cfg: IncusConfig
) -> None:
    killed, gone = _session(incus_cfg)
    live, kept = _session(incus_cfg)
    try:
        killed.send_signal(signal.SIGKILL)  # nothing of it runs again: no cleanup of its own
        killed.communicate()
        ours = {gone, f"{gone}-other", kept, f"{kept}-other"}
        assert ours <= _projects(incus)
        assert sorted(reap(incus_cfg, sorted(_projects(incus)))) == [gone, f"{gone}-other"]
        left = _projects(incus)
        assert not {gone, f"{gone}-other"} & left
        assert {kept, f"{kept}-other", incus.project} <= left
        assert not (LOCKS / f"{gone}.lock").exists()
    finally:
        live.kill()
        live.communicate()
        reap(incus_cfg, [kept, f"{kept}-other"])
    assert not {kept, f"{kept}-other"} & _projects(incus)
