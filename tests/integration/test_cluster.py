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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.backends.incus.client import PylxdIncus, connect
from plex.deploy.actions import Verb
from plex.deploy.copies import live_instances
from plex.deploy.probes import KUBECONFIG
from plex.errors import BackendError
from plex.model import owner, topology
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex
from plex.services.bake import Baker, Paths
from plex.services.cluster import Cluster as KubeCluster
from plex.services.deploy import deploy, make_deploy_plan, status_rows
from plex.services.registry import IncusCache
from plex.services.registry import stats as registry_stats
from tests.fixtures.incus_cluster import MACVLAN, POOL, Cluster, build_cluster

from .conftest import NETWORK, ROOT, bridge_address
from .conftest import POOL as HOST_POOL

pytestmark = pytest.mark.incus

PINNED = "gamma"  # the registry's member (one pinned role)
LOST = "gamma"  # the member stopped in the member-loss test
OTHER = "other-plex-node"
KUBECTL = ["/var/lib/rancher/rke2/bin/kubectl", "--kubeconfig", KUBECONFIG]


INOTIFY = ("max_user_instances", "max_user_watches", "max_queued_events")


def inotify_limits() -> dict[str, int]:
    """The host's inotify budget (bin/setup-incus raises it for many systemd containers)."""
    return {k: int(Path(f"/proc/sys/fs/inotify/{k}").read_text()) for k in INOTIFY}


@pytest.fixture(scope="module")
def host_limits() -> dict[str, int]:
    return inotify_limits()


@pytest.fixture(scope="module")
def cluster(
    incus: PylxdIncus, tmp_path_factory: pytest.TempPathFactory, host_limits: dict[str, int]
) -> Iterator[Cluster]:
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


def test_every_node_runs_on_its_planned_member(
    multi: Plex, remote: PylxdIncus, deployed: dict[str, float]
) -> None:
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


def test_nodes_on_different_members_reach_each_other(
    multi: Plex, remote: PylxdIncus, deployed: dict[str, float]
) -> None:
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


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180.0) -> Any:
    """Poll `check` until it answers something true (Incus's cluster state moves on its own
    clock: heartbeats, the healing task); the last answer is in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except BackendError as e:
            got = None
            last: Any = e.message
        else:
            last = got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s (last: {last!r})")
        time.sleep(2)


def lost_nodes(multi: Plex) -> set[str]:
    return {n.name for n in topology.nodes(multi) if n.member == LOST}


@pytest.fixture(scope="module")
def evacuated(
    incus: PylxdIncus, multi: Plex, remote: PylxdIncus, cluster: Cluster, deployed: dict[str, float]
) -> dict[str, Any]:
    """gamma stopped, its loss seen and reported, then `deploy --evacuate`."""
    lost = lost_nodes(multi)
    before = {n: i.uuid for n, i in remote.observe(multi.name).instances.items()}
    incus.stop(cluster.instances[LOST], force=True)
    t = time.monotonic()

    def reported() -> dict[str, Any]:
        rows = {r["node"]: r for r in status_rows(multi, remote)}
        return rows if {n for n, r in rows.items() if r["unreachable"]} == lost else {}

    # Right after a stop the others may briefly all look offline (a new database leader).
    rows = wait_for(f"{LOST}'s nodes unreachable", reported)
    seen = time.monotonic() - t
    plan, _ = make_deploy_plan(multi, remote)  # without --evacuate: left alone
    t = time.monotonic()
    deploy(multi, remote, ROOT, evacuate=True)
    took = time.monotonic() - t
    print(f"member {LOST} seen down after {seen:.0f}s; deploy --evacuate {took:.0f}s")
    return {"before": before, "rows": rows, "plan": plan, "seconds": took}


def test_members_and_their_nodes_leave_the_hosts_kernel_settings_alone(
    host_limits: dict[str, int], deployed: dict[str, float]
) -> None:
    """A privileged member, and every privileged node nested in it, shares the host's user
    namespace, so a sysctl its systemd applies is the host's: incus-base's own
    10-incus-inotify.conf cut the host's budget to 1024 instances (and a later 64-agent
    deploy had nodes whose init died)."""
    assert inotify_limits() == host_limits


def test_a_lost_member_is_reported_and_evacuate_re_creates_its_nodes(
    multi: Plex, remote: PylxdIncus, evacuated: dict[str, Any]
) -> None:
    lost = lost_nodes(multi)
    rows, plan = evacuated["rows"], evacuated["plan"]
    assert all(f"member {LOST} is " in rows[n]["unreachable"] for n in lost)
    # Without --evacuate the plan touches nothing there and says how to proceed.
    assert plan.unreachable.keys() == lost and plan.empty, plan.render_rows()
    assert any(f"plex deploy {multi.name} --evacuate" in note for note in plan.notes)
    seen = remote.observe(multi.name)
    live = live_instances(seen, [n.name for n in topology.nodes(multi)])
    for node in lost:
        n = topology.resolve(multi, node)
        inst = seen.instances[live[node]]
        # A new instance on an online member, named after it; the node's identity inside.
        assert inst.location in ("alpha", "beta") and inst.name == f"{node}-{inst.location}"
        assert inst.running and inst.config[owner.READY] == "true"
        assert inst.config[owner.NODE] == node
        assert remote.exec(inst.name, ["hostname"]).stdout.strip() == node
        addr = remote.exec(inst.name, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
        assert f"inet {n.address}/" in addr
        mac = remote.exec(inst.name, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        assert mac == n.mac
    # The old copies are still listed on the lost member (Incus keeps their names).
    assert {i.name for i in seen.instances.values() if i.location == LOST} == lost
    # The cluster is whole again: the VIP answers, every kube node is a Ready Node, etcd's
    # members are the three servers, and the registry answers at its address.
    with socket.create_connection((multi.network.vip, 6443), timeout=5):
        pass
    master = topology.master(multi).name
    got = json.loads(remote.exec(master, [*KUBECTL, "get", "nodes", "-o", "json"]).stdout)
    ready = {
        i["metadata"]["name"]
        for i in got["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"])
    }
    assert ready == {n.name for n in topology.nodes(multi) if n.role.is_kube}
    etcd = KubeCluster(multi, remote).summary()
    servers = [n.name for n in topology.nodes(multi) if n.role is Role.SERVER]
    assert sorted(etcd["members"]) == sorted(servers), etcd
    assert etcd["learners"] == [], etcd  # every joined server was promoted to a voter
    reg = topology.registry_node(multi)
    assert reg is not None
    url = f"http://{reg.address}:{multi.registry.port}/v2/"
    curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url]
    res = remote.exec(f"{multi.name}-agent1", curl)
    assert res.stdout in ("200", "401"), res.output
    # `plex registry stats` follows the registry node to its copy (its own instance is lost).
    cache = IncusCache(multi, remote)
    assert cache.node != reg.name and cache.node.startswith(f"{reg.name}-"), cache.node
    assert registry_stats(multi, cache, "incus").plex == multi.name
    # The reachable nodes kept their instances, and nothing more is planned.
    after = {n: i.uuid for n, i in seen.instances.items()}
    assert {n: u for n, u in evacuated["before"].items() if n not in lost} == {
        n: u for n, u in after.items() if n in evacuated["before"] and n not in lost
    }
    assert make_deploy_plan(multi, remote, evacuate=True)[0].empty
    assert OTHER in remote.instance_names()


def test_the_member_back_its_stale_copies_go_first_then_the_nodes_return_home(
    incus: PylxdIncus, multi: Plex, remote: PylxdIncus, cluster: Cluster, evacuated: dict[str, Any]
) -> None:
    lost = lost_nodes(multi)
    # Incus's healing marked the dead member evacuated: when it returns it starts nothing.
    wait_for(f"{LOST} healed", lambda: remote.members()[LOST].startswith("Evacuated"))
    incus.start(cluster.instances[LOST])

    def stale_rows() -> dict[str, Any]:
        rows = {r["node"]: r for r in status_rows(multi, remote)}
        return rows if all(rows[n]["stale_copies"] == [n] for n in lost) else {}

    rows = wait_for(f"{LOST} back with its stale copies", stale_rows)
    assert not any(r["unreachable"] for r in rows.values())
    seen = remote.observe(multi.name).instances
    assert all(seen[n].status == "Stopped" for n in lost), {n: seen[n].status for n in lost}
    plan, _ = make_deploy_plan(multi, remote)
    assert {c.instance for c in plan.stale} == lost
    t = time.monotonic()
    deploy(multi, remote, ROOT)  # the stale copies go; gamma takes nothing while evacuated
    cleaned = time.monotonic() - t
    names = remote.instance_names()
    assert not lost & set(names) and OTHER in names
    assert all(sum(1 for i in names if i == n or i.startswith(f"{n}-")) == 1 for n in lost)
    # The admin restores the member; the next deploy brings the nodes home under their names.
    res = incus.exec(cluster.instances["alpha"], ["incus", "cluster", "restore", LOST, "--force"])
    assert res.returncode == 0, res.output
    wait_for(f"{LOST} online", lambda: remote.members()[LOST] == "")
    plan, _ = make_deploy_plan(multi, remote)
    home = {a.node for a in plan.actions if a.verb is Verb.REPLACE}
    assert home == lost and all(plan.action(n).reason == f"back to member {LOST}" for n in lost)
    t = time.monotonic()
    deploy(multi, remote, ROOT)
    print(f"stale copies deleted in {cleaned:.0f}s; home again in {time.monotonic() - t:.0f}s")
    seen = remote.observe(multi.name).instances
    planned = {n.name: n.member for n in topology.nodes(multi)}
    assert {n: i.location for n, i in seen.items()} == planned
    assert all(i.running and i.config[owner.READY] == "true" for i in seen.values())
    assert make_deploy_plan(multi, remote)[0].empty
    assert OTHER in remote.instance_names()


def test_role_images_are_there_for_every_role(
    multi: Plex, remote: PylxdIncus, deployed: dict[str, float]
) -> None:
    aliases = remote.observe(multi.name).aliases
    for role in (Role.REGISTRY, Role.LB, Role.SERVER, Role.AGENT):
        assert f"{multi.name}/{role.value}" in aliases
