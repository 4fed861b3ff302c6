"""Deploy the demo plex on real Incus: plan, waves, cascades, probes, fail-over, convergence.

The kube nodes run the STAND-IN RKE2 release (tests/fixtures/standin_rke2: no internet here),
which answers the product's real probes (supervisor /ping over TLS, kubeconfig readiness,
node Ready) through the real haproxy and keepalived VIP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.deploy.actions import Verb
from plex.deploy.probes import vip_holders
from plex.deploy.spec import registry_volume
from plex.model import owner, topology
from plex.model.plex import Plex, Role
from plex.services.deploy import deploy, make_deploy_plan
from plex.services.destroy import destroy
from plex.store.identity import require_identity

from .conftest import ROOT, with_agent_offset

if TYPE_CHECKING:
    from typing import Any

    from plex.backends.incus.client import PylxdIncus
    from plex.model.plex import IncusConfig
    from plex.services.bake import BakeResult

pytestmark = pytest.mark.incus

FOREIGN = "not-plex-owned"


def uuids(incus: PylxdIncus, plex: Plex) -> dict[str, str]:
    return {n: i.uuid for n, i in incus.observe(plex.name).instances.items()}


def write_plex_file(plex: Plex, path: Path) -> Path:
    path.write_text(yaml.safe_dump(plex.model_dump(mode="json", exclude={"source"})))
    return path


def plex_cli(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PLEX_HOME": str(ROOT), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "plex", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def deployed(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult], incus_cfg: IncusConfig
) -> dict[str, Any]:
    """A foreign instance in the plex's project, then the whole demo plex from nothing."""
    incus.create_instance(
        FOREIGN,
        image=baked["lb"].fingerprint,
        profiles=[],
        config={"user.note": "created by hand, not by plex"},
        devices={"root": {"type": "disk", "path": "/", "pool": incus_cfg.pool}},
    )
    plan, _ = make_deploy_plan(test_plex, incus)
    assert {a.verb for a in plan.actions} == {Verb.CREATE}
    plan, result = deploy(test_plex, incus, ROOT)
    return {"plan": plan, "result": result}


def test_deploy_from_nothing_then_the_replan_is_empty(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any]
) -> None:
    waves = [[a.node for a in w] for w in deployed["plan"].waves]
    assert waves[0] == ["demo-registry1"]
    # A new cluster: the other servers and the agents join as soon as the master is ready
    # (etcd admits the servers one at a time; RKE2 retries a refused join every second).
    assert waves[-1] == ["demo-server2", "demo-server3", "demo-agent1", "demo-agent2"]
    assert waves.index(["demo-server1"]) == len(waves) - 2
    plan, _ = make_deploy_plan(test_plex, incus)
    assert plan.empty, plan.render_rows()
    seen = incus.observe(test_plex.name).instances
    assert set(seen) == {n.name for n in topology.nodes(test_plex)}
    assert all(i.running and i.config[owner.READY] == "true" for i in seen.values())
    assert FOREIGN in incus.instance_names()


def _fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_every_node_presents_its_precomputed_host_key_over_the_bridge(
    test_plex: Plex, deployed: dict[str, Any]
) -> None:
    identity = require_identity(test_plex)
    for n in topology.nodes(test_plex):
        out = subprocess.run(
            ["ssh-keyscan", "-T", "5", "-t", "ed25519,rsa", n.address],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        got = {
            line.split()[1]: _fingerprint(line.split(None, 1)[1])
            for line in out.splitlines()
            if line and not line.startswith("#")
        }
        keys = identity.host_keys(n.name)
        assert got == {
            "ssh-ed25519": keys["ed25519"].fingerprint,
            "ssh-rsa": keys["rsa"].fingerprint,
        }, n.name


def test_private_host_keys_are_0600_on_the_nodes(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any]
) -> None:
    for n in topology.nodes(test_plex):
        res = incus.exec(
            n.name,
            ["stat", "-c", "%a %U", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"],
        )
        assert res.stdout.split() == ["600", "root", "600", "root"], n.name


def test_kube_nodes_apply_only_their_own_kernel_settings(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any]
) -> None:
    """A kube node is a privileged container: a setting its systemd-sysctl writes that is not
    per network namespace is the host's. It applies plex's net.* file (its own namespace's)
    and leaves the rest, here systemd's fs.protected_fifos = 1, to the host."""
    host = Path("/proc/sys/fs/protected_fifos")
    before = host.read_text()
    agent = f"{test_plex.name}-agent1"
    host.write_text("0\n")  # a value systemd's 99-protect-links.conf would change
    try:
        assert incus.exec(agent, ["sysctl", "-qw", "net.ipv4.ip_forward=0"]).returncode == 0
        res = incus.exec(agent, ["systemctl", "restart", "systemd-sysctl"])
        assert res.returncode == 0, res.output
        assert host.read_text() == "0\n"
        forward = incus.exec(agent, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout
        assert forward.strip() == "1"  # plex's file, applied in the node's own namespace
    finally:
        host.write_text(before)


def test_replace_master_recreates_exactly_servers_and_agents(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any]
) -> None:
    before = uuids(incus, test_plex)
    plan, result = deploy(test_plex, incus, ROOT, replace=["master"])
    after = uuids(incus, test_plex)
    kube = {n.name for n in topology.nodes(test_plex) if n.role.is_kube}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == kube
    order = [a.node for w in plan.waves for a in w]
    assert order[0] == "demo-server1"
    assert [w.nodes for w in result.waves] == [
        ["demo-server1"],
        ["demo-server2", "demo-server3", "demo-agent1", "demo-agent2"],
    ]
    assert make_deploy_plan(test_plex, incus)[0].empty


def test_replace_one_agent_touches_one_node(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any]
) -> None:
    before = uuids(incus, test_plex)
    plan, _ = deploy(test_plex, incus, ROOT, replace=["demo-agent2"])
    after = uuids(incus, test_plex)
    assert {n for n in before if before[n] != after[n]} == {"demo-agent2"}
    assert [a.node for w in plan.waves for a in w] == ["demo-agent2"]
    assert plan.action("demo-agent2").drain  # a live cluster: drained first


def _tcp_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_vip_moves_within_5s_when_its_lb_stops(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any]
) -> None:
    lbs = [n for n in topology.nodes(test_plex) if n.role is Role.LB]
    vip = test_plex.network.vip
    assert vip is not None  # the demo plex has lbs and a VIP
    holders = vip_holders(incus, test_plex, lbs)
    assert len(holders) == 1
    assert _tcp_ok(vip, 6443)
    incus.stop(holders[0], force=True)
    start = time.monotonic()
    others = [n for n in lbs if n.name != holders[0]]
    while vip_holders(incus, test_plex, others) == [] and time.monotonic() - start < 10:
        time.sleep(0.2)
    moved = time.monotonic() - start
    assert vip_holders(incus, test_plex, others) != [], "VIP never moved"
    assert moved < 5.0, f"VIP took {moved:.1f}s to move"
    deadline = time.monotonic() + 10
    while not _tcp_ok(vip, 6443) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _tcp_ok(vip, 6443), "TCP to VIP:6443 does not work after fail-over"
    # The stopped lb is merely stopped: the next deploy starts just it (same instance).
    plan, _ = make_deploy_plan(test_plex, incus)
    assert [(a.node, a.verb) for w in plan.waves for a in w] == [(holders[0], Verb.START)]
    before = uuids(incus, test_plex)
    deploy(test_plex, incus, ROOT)
    assert uuids(incus, test_plex) == before
    assert make_deploy_plan(test_plex, incus)[0].empty


def test_sigkill_during_deploy_then_deploy_again_converges(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any], tmp_path: Path
) -> None:
    f = write_plex_file(test_plex, tmp_path / "demo.yaml")
    before = uuids(incus, test_plex)
    proc = plex_cli(["deploy", str(f), "--replace", "master", "--yes"])
    # Kill it in the middle: once the master was recreated but the cascade is not done.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        now = uuids(incus, test_plex)
        if now.get("demo-server1") not in (None, before["demo-server1"]):
            break
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    unfinished = make_deploy_plan(test_plex, incus)[0]
    assert not unfinished.empty
    deploy(test_plex, incus, ROOT)
    assert make_deploy_plan(test_plex, incus)[0].empty
    names = set(incus.instance_names())
    assert names == {n.name for n in topology.nodes(test_plex)} | {FOREIGN}, "orphans left"


def test_rollback_status_and_kubeconfig(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult], deployed: dict[str, Any]
) -> None:
    from plex.cli.commands.plan import plan_for
    from plex.services.bake import Baker, Paths
    from plex.services.deploy import (
        kubeconfig,
        move_aliases,
        rollback_moves,
        rolled_back,
        status_rows,
    )

    # A newer generation of every role (plex data changed): the plan wants to replace.
    Baker(with_agent_offset(test_plex, 41), incus, Paths.under(ROOT)).bake(list(Role))
    assert not make_deploy_plan(test_plex, incus)[0].empty
    assert not any(r["up_to_date"] for r in status_rows(test_plex, incus))
    # Rolling back points every role at the generation the nodes run: nothing to redeploy.
    observed = incus.observe(test_plex.name)
    moves = rollback_moves(test_plex, observed)
    assert {m.role: m.to_digest for m in moves} == {r: baked[r].digest for r in baked}
    assert incus.observe(test_plex.name).aliases == observed.aliases  # planned, not moved
    assert rolled_back(observed, moves).aliases != observed.aliases
    move_aliases(incus, moves)
    assert make_deploy_plan(test_plex, incus)[0].empty
    # `plex plan` plans the same images deploy uses: after the rollback, nothing either.
    shown = plan_for(test_plex, [], False, None, None)
    assert shown.empty and shown.to_json() == make_deploy_plan(test_plex, incus)[0].to_json()
    rows = status_rows(test_plex, incus)
    assert all(r["ready"] and r["up_to_date"] and r["state"] == "Running" for r in rows), rows
    kc = kubeconfig(test_plex, incus)
    assert f"server: https://{test_plex.network.vip}:6443" in kc
    assert "127.0.0.1" not in kc


def test_reset_and_destroy_spare_what_plex_does_not_own(
    incus: PylxdIncus, test_plex: Plex, deployed: dict[str, Any], tmp_path: Path
) -> None:
    f = write_plex_file(test_plex, tmp_path / "demo.yaml")
    proc = plex_cli(["reset", str(f), "--yes", "-o", "json"])
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert FOREIGN in incus.instance_names()
    destroy(test_plex, incus)
    assert incus.observe(test_plex.name).instances == {}
    assert FOREIGN in incus.instance_names()
    # The registry cache volume survives destroy (not --all).
    assert incus.volume_exists(test_plex.incus.pool, registry_volume(test_plex))
