"""plex on a real three-member Incus cluster (tests/fixtures/incus_cluster.py), reached as a user
reaches a remote one: HTTPS, a trusted client certificate, `incus.remote` in the plex file.

The role images are baked on the cluster itself (published once, used on every member), a small
plex (registry, lb pair, 3 servers, 2 agents) is deployed with round-robin placement and the
registry pinned, and nodes on different members reach each other over `macnet` (macvlan on the
members' uplink, docs/cluster.md). Then a member is stopped: status and plan say which nodes are
unreachable and why, and a deploy leaves them (and another plex's instance) alone.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plex.backends.incus.client import PylxdIncus, connect
from plex.deploy.actions import Verb
from plex.model import owner, topology
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex
from plex.services.bake import Baker, Paths
from plex.services.deploy import deploy, make_deploy_plan, status_rows
from tests.fixtures.incus_cluster import MACVLAN, POOL, Cluster, build_cluster

from .conftest import NETWORK, ROOT, bridge_address
from .conftest import POOL as HOST_POOL

pytestmark = pytest.mark.incus

PINNED = "gamma"  # the registry's member (one pinned role)
LOST = "gamma"  # the member stopped in the member-loss test
OTHER = "other-plex-node"


@pytest.fixture(scope="module")
def cluster(incus: PylxdIncus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = time.monotonic()
    c = build_cluster(
        incus,
        network=NETWORK,
        pool=HOST_POOL,
        gateway=bridge_address(),
        cache=Path(os.environ.get("PLEX_CACHE_DIR", "/var/cache/plex-test")),
        work=tmp_path_factory.mktemp("cluster"),
        prefix="member",
    )
    print(f"cluster of {len(c.members)} members in {time.monotonic() - started:.0f}s")
    # The members run incusd and a whole nested plex: removed when the module ends, not with
    # the session project, or they load the machine for every later test module.
    try:
        yield c
    finally:
        for name in c.instances.values():
            incus.delete_instance(name)


@pytest.fixture(scope="module")
def multi(test_plex: Plex, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Plex:
    data = test_plex.model_dump(mode="json", exclude={"source"})
    net = ipaddress.ip_network(data["network"]["cidr"])
    data["name"] = "multi"
    data["incus"] = {
        "remote": cluster.url,
        "client_cert": str(cluster.client_cert),
        "client_key": str(cluster.client_key),
        # The cluster's certificate (regenerated with the members' addresses): pylxd pins it.
        "verify": str(cluster.server_cert),
        "project": "multi",
        "pool": POOL,
        "network": MACVLAN,
        "network_type": "macvlan",
        "members": list(cluster.members),
    }
    data["network"].update(
        {"addressing": "static", "vip": str(net.network_address + 110), "virtual_router_id": 86}
    )
    roles = data["roles"]
    roles["registry"].update({"offset": 105, "placement": [PINNED]})
    roles["lb"].update({"offset": 111})
    roles["server"].update({"offset": 121})
    roles["agent"].update({"offset": 131, "count": 2})
    for rc in roles.values():
        rc.pop("capacity", None)
    f = tmp_path_factory.mktemp("multi") / "multi.yaml"
    f.write_text(yaml.safe_dump(data))
    return parse_plex(f.read_text(), str(f))


@pytest.fixture(scope="module")
def remote(multi: Plex) -> PylxdIncus:
    return connect(multi.incus)


@pytest.fixture(scope="module")
def deployed(multi: Plex, remote: PylxdIncus, state_dirs: Path) -> dict[str, float]:
    times = {}
    t = time.monotonic()
    Baker(multi, remote, Paths.under(ROOT)).bake([r for r, rc in multi.roles.items() if rc.count])
    times["bake"] = time.monotonic() - t
    # Another plex's instance on the member that will be lost: never touched.
    remote.create_instance(
        OTHER,
        image="",
        source={"type": "none"},
        profiles=["default"],
        config={owner.PLEX: "someone-else"},
        target=LOST,
        devices={"root": {"type": "disk", "path": "/", "pool": POOL}},
    )
    t = time.monotonic()
    deploy(multi, remote, ROOT)
    times["deploy"] = time.monotonic() - t
    print(f"cluster bake {times['bake']:.0f}s, deploy {times['deploy']:.0f}s")
    return times


def test_every_node_runs_on_its_planned_member(multi, remote, deployed) -> None:
    seen = remote.observe(multi.name).instances
    planned = {n.name: n.member for n in topology.nodes(multi)}
    assert {name: i.location for name, i in seen.items()} == planned
    assert planned[f"{multi.name}-registry1"] == PINNED
    # Round-robin over the members for the other roles.
    assert [planned[f"{multi.name}-server{i}"] for i in (1, 2, 3)] == ["alpha", "beta", "gamma"]
    assert all(i.running and i.config[owner.READY] == "true" for i in seen.values())
    # One published image per role, used by nodes on every member.
    fps: dict[str | None, set[str]] = {}
    for name in seen:
        base = remote.instance_config(name)["volatile.base_image"]
        fps.setdefault(seen[name].role, set()).add(base)
    assert all(len(v) == 1 for v in fps.values()), fps


def test_nodes_on_different_members_reach_each_other(multi, remote, deployed) -> None:
    vip = multi.network.vip
    with socket.create_connection((vip, 6443), timeout=5):
        pass  # the lb VIP, from the host, across the bridge
    master = topology.master(multi).name
    res = remote.exec(
        master,
        [
            "/var/lib/rancher/rke2/bin/kubectl",
            "--kubeconfig",
            "/etc/rancher/rke2/rke2.yaml",
            "get",
            "nodes",
            "-o",
            "json",
        ],
    )
    nodes = {n["metadata"]["name"] for n in json.loads(res.stdout)["items"]}
    kube = {n.name for n in topology.nodes(multi) if n.role.is_kube}
    assert nodes == kube  # every join went through the VIP from its own member
    reg = topology.registry_node(multi)
    assert reg is not None
    agent = f"{multi.name}-agent1"  # on alpha; the registry is on gamma
    res = remote.exec(
        agent,
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://{reg.address}:{multi.registry.port}/v2/",
        ],
    )
    assert res.stdout in ("200", "401"), res.output


def test_a_lost_member_is_reported_and_its_nodes_are_left_alone(
    incus, multi, remote, cluster, deployed
) -> None:
    lost_nodes = {n.name for n in topology.nodes(multi) if n.member == LOST}
    before = {n: i.uuid for n, i in remote.observe(multi.name).instances.items()}
    incus.stop(cluster.instances[LOST], force=True)
    started = time.monotonic()
    try:
        # Incus calls a member offline after cluster.offline_threshold (20 s) without
        # heartbeat; right after a stop the others may briefly all look offline (a new
        # database leader), so wait for the steady answer.
        deadline = time.monotonic() + 120
        while True:
            rows = {r["node"]: r for r in status_rows(multi, remote)}
            seen = {n for n, r in rows.items() if r["unreachable"]}
            if seen == lost_nodes or time.monotonic() > deadline:
                break
            time.sleep(3)
        print(f"member {LOST} seen offline after {time.monotonic() - started:.0f}s")
        assert seen == lost_nodes
        assert all(f"member {LOST} is Offline" in rows[n]["unreachable"] for n in lost_nodes)
        plan, _ = make_deploy_plan(multi, remote)
        assert plan.unreachable.keys() == lost_nodes
        for n in lost_nodes:
            a = plan.action(n)
            assert a.verb is Verb.KEEP and a.reason.startswith(f"unreachable: member {LOST}")
        assert plan.empty, plan.render_rows()
        assert any("not touched, unreachable" in note for note in plan.notes)
        deploy(multi, remote, ROOT)  # nothing to do that it could do: nothing touched
        after = {n: i.uuid for n, i in remote.observe(multi.name).instances.items()}
        assert after.keys() == before.keys()
        # Reachable nodes kept their instances; the lost ones are still there (Incus lists
        # them without their config while the member is down).
        assert {n: u for n, u in after.items() if n not in lost_nodes} == {
            n: u for n, u in before.items() if n not in lost_nodes
        }
    finally:
        incus.start(cluster.instances[LOST])
        deadline = time.monotonic() + 120
        while remote_member_down(remote, LOST) and time.monotonic() < deadline:
            time.sleep(2)
    assert OTHER in remote.instance_names()
    # Back: the plan sees the nodes again (running again, as Incus restarts them), the same
    # instances as before the loss.
    deadline = time.monotonic() + 120
    plan, _ = make_deploy_plan(multi, remote)
    while not plan.empty and time.monotonic() < deadline:
        time.sleep(3)
        plan, _ = make_deploy_plan(multi, remote)
    assert not plan.unreachable
    assert plan.empty, plan.render_rows()
    back = {n: i.uuid for n, i in remote.observe(multi.name).instances.items()}
    assert back == before


def remote_member_down(remote: PylxdIncus, member: str) -> bool:
    try:
        return bool(remote.members().get(member))
    except Exception:
        return True


def test_role_images_are_there_for_every_role(multi, remote, deployed) -> None:
    aliases = remote.observe(multi.name).aliases
    for role in (Role.REGISTRY, Role.LB, Role.SERVER, Role.AGENT):
        assert f"{multi.name}/{role.value}" in aliases
