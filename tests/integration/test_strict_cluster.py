"""The deploy against a cluster as strict as RKE2 (the stand-in's real etcd, node passwords and
registries.yaml wiring): lost nodes rejoin under their names, etcd members stay exactly the
servers, a wrong node password and a failing drain stop the deploy naming the node, a node
whose registry is down fails its probe naming the mirror, and a plex without quorum refuses
server replacements until `plex reset`.

One deployed plex is shared by the module, in order (each test leaves it healthy: the quorum
test ends with a reset, which the tests after it build on)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.backends.incus.protocol import Incus
from plex.deploy.probes import KUBECONFIG, KUBECTL
from plex.errors import PlexError, ProbeError
from plex.model import topology
from plex.model.identity import NODE_PASSWORD_PATH
from plex.model.plex import Plex
from plex.services.cluster import Cluster
from plex.services.deploy import deploy, etcd_status
from plex.services.destroy import destroy
from plex.store.identity import ensure_identity, require_identity

from .conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

    from plex.backends.incus.client import PylxdIncus
    from plex.services.bake import BakeResult
    from tests.fixtures.upstream_registry import Upstream

pytestmark = pytest.mark.incus

SERVERS = ["demo-server1", "demo-server2", "demo-server3"]
REAL = "/var/lib/rancher/rke2/bin/real/kubectl"  # keeps its name: kubectl


@pytest.fixture(scope="module")
def cluster(incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult]) -> Iterator[Cluster]:
    try:
        # A failed deploy must not leave its nodes holding the addresses later modules use.
        deploy(test_plex, incus, ROOT)
        yield Cluster(test_plex, incus)
    finally:
        destroy(test_plex, incus)


def members(cluster: Cluster) -> list[str]:
    """The servers etcd's members are: RKE2 names each `<node>-<8 hex>`; none a learner."""
    server = cluster.healthy_server()
    assert server, "no healthy server"
    got = cluster.members(server)
    assert all(re.fullmatch(r".+-[0-9a-f]{8}", m.name) for m in got), got
    assert not any(m.is_learner for m in got), got
    return sorted(m.node(cluster.servers()) or m.name for m in got)


def uuid(incus: Incus, plex: Plex, name: str) -> str:
    return incus.observe(plex.name).instances[name].uuid


def node_password(incus: Incus, name: str) -> str:
    return incus.pull_file(name, NODE_PASSWORD_PATH).decode().strip()


def plex_cli(plex: Plex, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "demo.yaml"
    f.write_text(yaml.safe_dump(plex.model_dump(mode="json", exclude={"source"})))
    env = {**os.environ, "PLEX_HOME": str(ROOT), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "plex", args[0], str(f), *args[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_after_the_deploy_etcd_members_are_the_servers(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster
) -> None:
    assert members(cluster) == SERVERS
    st = etcd_status(test_plex, incus)
    assert st is not None and st["quorum"] and st["leader"] in SERVERS
    assert all(v["member"] and v["quorum"] for v in st["servers"].values())
    # Every kube node holds the node password of the identity, pushed at create (0600).
    identity = require_identity(test_plex)
    for n in topology.nodes(test_plex):
        if n.role.is_kube:
            assert node_password(incus, n.name) == identity.node_passwords[n.name]
            assert incus.file_mode(n.name, NODE_PASSWORD_PATH) == 0o600


def test_a_wrong_node_password_is_refused_and_reported(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster
) -> None:
    old = require_identity(test_plex).node_passwords["demo-agent2"]
    # Test-made: another password for agent2 while the cluster still knows the old one.
    ensure_identity(test_plex, rotate=["demo-agent2"])
    assert require_identity(test_plex).node_passwords["demo-agent2"] != old
    subprocess.run(
        ["incus", "delete", "-f", "--project", test_plex.incus.project, "demo-agent2"], check=True
    )
    with pytest.raises(ProbeError) as e:
        deploy(test_plex, incus, ROOT)
    assert "demo-agent2" in e.value.message and "Node password rejected" in e.value.message
    # Replacing it drains and deletes the old Node (and with it the password entry).
    deploy(test_plex, incus, ROOT, replace=["agent2"])
    assert "demo-agent2" in cluster.kubectl("demo-server1", ["get", "nodes"]).stdout


def test_a_node_whose_registry_is_down_fails_naming_the_mirror(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster, upstream: Upstream
) -> None:
    registry = topology.resolve(test_plex, "registry1")
    # The registry node stays up (plex would replace a stopped one first); its service stops.
    incus.exec(
        "demo-registry1",
        [
            "sh",
            "-c",
            "systemctl stop plex-registry.target "
            "'plex-registry@*.service' zot.service 2>/dev/null; true",
        ],
    )
    upstream.stop()  # the upstream too: the cache is the only way left
    try:
        with pytest.raises(ProbeError) as e:
            deploy(test_plex, incus, ROOT, replace=["agent1"])
        assert "demo-agent1" in e.value.message and "rke2-runtime" in e.value.message
        assert f"http://{registry.address}:" in e.value.message, e.value.message
    finally:
        upstream.restart()
    # plex restores the registry node (same cache volume), then agent1 becomes ready.
    deploy(test_plex, incus, ROOT, replace=["registry1"])
    ready = cluster.kubectl(
        "demo-server1",
        [
            "get",
            "node",
            "demo-agent1",
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        ],
    ).stdout
    assert ready == "True"


def test_without_quorum_status_says_so_replace_is_refused_and_reset_heals(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster, tmp_path: Path
) -> None:
    for s in ("demo-server2", "demo-server3"):
        incus.stop(s)
    deadline = time.monotonic() + 60  # etcd notices after its election timeout
    while (st := etcd_status(test_plex, incus)) and st["quorum"] and time.monotonic() < deadline:
        time.sleep(2)
    assert st is not None and not st["quorum"], st
    out = plex_cli(test_plex, tmp_path, "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["etcd"]["quorum"] is False
    refused = plex_cli(test_plex, tmp_path, "deploy", "--replace", "server2", "--yes")
    assert refused.returncode == 7, refused.stderr
    assert "etcd has no quorum (1 of 3 servers running)" in refused.stderr
    assert "plex reset" in refused.stderr
    reset = plex_cli(test_plex, tmp_path, "reset", "--yes")
    assert reset.returncode == 0, reset.stderr[-2000:]
    assert members(cluster) == SERVERS
    st = etcd_status(test_plex, incus)
    assert st is not None and st["quorum"]
    assert KUBECONFIG  # the admin kubeconfig path the servers answer on


def test_a_failing_drain_stops_the_deploy_and_force_goes_on(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster
) -> None:
    # Test-made: kubectl on every server refuses to drain (as a PodDisruptionBudget would).
    wrapper = (
        "#!/bin/sh\n"
        'if [ "$3" = drain ]; then echo "error: cannot evict pod as it would violate '
        "the pod's disruption budget\" >&2; exit 1; fi\n"
        f'exec {REAL} "$@"\n'
    )
    for s in SERVERS:
        incus.exec(s, ["sh", "-c", f"mkdir -p {REAL.rsplit('/', 1)[0]} && mv {KUBECTL} {REAL}"])
        incus.push_file(s, KUBECTL, wrapper.encode(), mode=0o755)
    try:
        before = uuid(incus, test_plex, "demo-agent1")
        with pytest.raises(PlexError) as e:
            deploy(test_plex, incus, ROOT, replace=["agent1"])
        assert "demo-agent1: kubectl drain on demo-server1 failed" in e.value.message
        assert "disruption budget" in e.value.message and "--force" in (e.value.hint or "")
        assert uuid(incus, test_plex, "demo-agent1") == before  # untouched
        said: list[str] = []
        deploy(
            test_plex,
            incus,
            ROOT,
            replace=["agent1"],
            force=True,
            report=lambda node, msg: said.append(f"{node}: {msg}"),
        )
        assert any(
            "demo-agent1: kubectl drain on demo-server1 failed, skipped (--force)" in m
            for m in said
        ), said
        assert uuid(incus, test_plex, "demo-agent1") != before
    finally:
        for s in SERVERS:
            incus.exec(s, ["mv", REAL, KUBECTL])


def test_lost_nodes_come_back_under_their_names(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster
) -> None:
    """`incus delete -f` behind plex's back: recreated, they rejoin with the same password."""
    passwords = {n: node_password(incus, n) for n in ("demo-agent2", "demo-server2")}
    for n in passwords:
        subprocess.run(
            ["incus", "delete", "-f", "--project", test_plex.incus.project, n], check=True
        )
    deploy(test_plex, incus, ROOT)
    assert {n: node_password(incus, n) for n in passwords} == passwords
    assert members(cluster) == SERVERS
    ready = cluster.kubectl("demo-server1", ["get", "nodes"]).stdout
    assert "demo-agent2" in ready and "demo-server2" in ready


def test_replacing_server2_then_server3_keeps_exactly_the_three_members(
    incus: PylxdIncus, test_plex: Plex, cluster: Cluster
) -> None:
    for s in ("server2", "server3"):
        deploy(test_plex, incus, ROOT, replace=[s])
        assert members(cluster) == SERVERS, s
