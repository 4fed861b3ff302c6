"""Keeping the cluster, on real Incus: scale-out within capacity, a stopped master started, the
pristine snapshot reset, and a new server image rolled one server at a time while a client
polls the API through the VIP.

One deploy of the demo plex for the whole module (the kube nodes run the STAND-IN RKE2
release, tests/fixtures/standin_rke2); the tests run in file order, each leaving the plex
deployed and converged for the next.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.backends.incus.protocol import Incus
from plex.deploy.actions import Strategy, Verb
from plex.errors import UsageError
from plex.model import owner, topology
from plex.model.plex import Plex, Role
from plex.plexfile.load import parse_plex
from plex.services.deploy import deploy, make_deploy_plan
from plex.services.node_create import JOIN_DROPIN
from plex.services.pristine import snapshot_name
from plex.services.snapshot import reset_to, take_snapshot
from plex.store.identity import require_identity

from .conftest import ROOT

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from plex.services.bake import BakeResult

pytestmark = pytest.mark.incus


def uuids(incus: PylxdIncus, plex: Plex) -> dict[str, str]:
    return {n: i.uuid for n, i in incus.observe(plex.name).instances.items()}


def with_agents(plex: Plex, count: int) -> Plex:
    data = plex.model_dump(mode="json", exclude={"source"})
    data["roles"]["agent"]["count"] = count
    return parse_plex(yaml.safe_dump(data), f"demo with {count} agents")


@pytest.fixture(scope="module")
def lab(incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult]) -> Iterator[Plex]:
    from plex.model.image import image_alias
    from plex.services.destroy import destroy

    deploy(test_plex, incus, ROOT)
    assert make_deploy_plan(test_plex, incus)[0].empty
    yield test_plex
    # Leave the session as other modules expect it: no nodes, the session's images current,
    # and no extra generation in the catalog (rollback tests count generations).
    from plex.store.catalog import load_catalog, save_catalog

    destroy(test_plex, incus)
    for role, result in baked.items():
        incus.set_alias(image_alias(test_plex.name, Role(role)), result.fingerprint)
    catalog = load_catalog(test_plex.name)
    for entry in catalog.generations(Role.SERVER):
        if entry.digest != baked[Role.SERVER.value].digest:
            catalog = catalog.remove(Role.SERVER.value, entry.digest)
            incus.delete_image(entry.fingerprint)
    save_catalog(catalog)


def test_adding_an_agent_creates_exactly_one_instance_and_replaces_none(
    incus: PylxdIncus, lab: Plex, baked: dict[str, BakeResult]
) -> None:
    from plex.services.bake import Baker, Paths

    three = with_agents(lab, 3)
    # Within capacity: every role's image is the one already baked (a cached no-op).
    results = Baker(three, incus, Paths.under(ROOT)).bake(list(Role))
    assert {r.role.value: r.digest for r in results} == {k: v.digest for k, v in baked.items()}
    assert all(r.cached for r in results)
    before = uuids(incus, lab)
    plan, _ = deploy(three, incus, ROOT)
    assert [(a.node, a.verb) for w in plan.waves for a in w] == [("demo-agent3", Verb.CREATE)]
    after = uuids(incus, three)
    assert set(after) - set(before) == {"demo-agent3"}
    assert all(after[n] == before[n] for n in before), "an existing node was replaced"
    # And back: removing it drains and deletes just it.
    plan, _ = deploy(lab, incus, ROOT)
    assert [(a.node, a.verb, a.drain) for w in plan.waves for a in w] == [
        ("demo-agent3", Verb.DELETE, True)
    ]
    assert uuids(incus, lab) == before


def test_a_stopped_master_is_started_not_replaced(incus: PylxdIncus, lab: Plex) -> None:
    before = uuids(incus, lab)
    incus.stop("demo-server1", force=True)
    plan, _ = make_deploy_plan(lab, incus)
    assert [(a.node, a.verb) for w in plan.waves for a in w] == [("demo-server1", Verb.START)]
    assert plan.strategy is Strategy.ROLLING
    deploy(lab, incus, ROOT)
    assert uuids(incus, lab) == before
    assert incus.observe(lab.name).instances["demo-server1"].running
    assert make_deploy_plan(lab, incus)[0].empty


def _host_key(incus: Incus, node: str) -> str:
    return incus.pull_file(node, "/etc/ssh/ssh_host_ed25519_key.pub").decode().split()[1]


def test_snapshot_reset_restores_the_deployed_state(incus: PylxdIncus, lab: Plex) -> None:
    taken = take_snapshot(lab, incus, ROOT)
    assert set(taken.nodes) == {n.name for n in topology.nodes(lab)}
    assert make_deploy_plan(lab, incus)[0].empty  # healthy again after the consistent stop
    before = uuids(incus, lab)
    marked = ["demo-server1", "demo-server2", "demo-agent1", "demo-lb1"]
    for node in marked:
        incus.push_file(node, "/root/after-the-snapshot", b"written after the snapshot\n")
    result = reset_to(lab, incus, ROOT, "pristine")
    assert result.snapshot == taken.snapshot
    for node in marked:
        res = incus.exec(node, ["test", "-e", "/root/after-the-snapshot"])
        assert res.returncode == 1, f"{node} still has the marker"
    # Same instances, same identity: host keys as precomputed, all nodes ready and current.
    assert uuids(incus, lab) == before
    identity = require_identity(lab)
    for n in topology.nodes(lab):
        want = identity.host_keys(n.name)["ed25519"].public_key.split()[1]
        assert _host_key(incus, n.name) == want, n.name
    assert make_deploy_plan(lab, incus)[0].empty
    # The cluster is whole: every kube node is Ready as seen from the master.
    out = incus.exec(
        "demo-server1",
        [
            "/var/lib/rancher/rke2/bin/kubectl",
            "--kubeconfig",
            "/etc/rancher/rke2/rke2.yaml",
            "get",
            "nodes",
        ],
    ).stdout
    for n in topology.nodes(lab):
        if n.role.is_kube:
            assert n.name in out


def test_image_prune_takes_the_snapshots_of_retired_generations(
    incus: PylxdIncus, lab: Plex
) -> None:
    from plex.services.images import prune

    # The set the reset above restored is whole; a snapshot of another generation on one node
    # (as a node replaced since would have left it on its survivors) is not.
    stamp = reset_latest(incus, lab)
    old = snapshot_name("0" * 64, stamp)
    incus.create_snapshot("demo-agent1", old)
    incus.create_snapshot("demo-agent1", "kept-by-hand")
    prune(incus, lab.name, keep=10)
    held = incus.snapshots("demo-agent1")
    assert old not in held and "kept-by-hand" in held
    assert reset_latest(incus, lab) == stamp  # the whole set stays
    incus.delete_snapshot("demo-agent1", "kept-by-hand")


def reset_latest(incus: PylxdIncus, plex: Plex) -> str:
    from plex.services.snapshot import Snapshots

    return Snapshots(plex, incus, ROOT).latest(incus.observe(plex.name))


def _cluster_id(incus: PylxdIncus, lab: Plex, server: str) -> str:
    import json

    from plex.deploy import etcd
    from plex.services.cluster import Cluster

    return str(
        json.loads(Cluster(lab, incus).etcd_call(server, etcd.STATUS))["header"]["cluster_id"]
    )


class VipPoller(threading.Thread):
    """A client of the API through the VIP: a new HTTPS request every 100 ms; any request
    that gets no HTTP answer (refused, reset, closed, timed out) is a failure."""

    def __init__(self, vip: str) -> None:
        super().__init__(daemon=True)
        self.vip = vip
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def run(self) -> None:
        while not self.stop.is_set():
            conn = http.client.HTTPSConnection(self.vip, 6443, timeout=5, context=self.ctx)
            try:
                conn.request("GET", "/readyz")
                conn.getresponse().read()
                self.ok += 1
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{time.strftime('%T')} {type(e).__name__}: {e}")
            finally:
                conn.close()
            time.sleep(0.1)


def test_replacing_the_master_by_name_rolls_it_into_the_same_cluster(
    incus: PylxdIncus, lab: Plex
) -> None:
    """`--replace demo-server1` names a node: the master is drained and re-created as a joiner
    of the running cluster through the VIP; nothing else is replaced, the cluster stays."""
    before = uuids(incus, lab)
    cluster = _cluster_id(incus, lab, "demo-server2")
    assert reset_latest(incus, lab)  # a pristine set of this generation exists
    plan, _ = make_deploy_plan(lab, incus, replace=["demo-server1"])
    assert plan.strategy is Strategy.ROLLING, plan.why
    assert "joiner of the running cluster" in plan.why
    assert [[(a.node, a.verb) for a in w] for w in plan.waves] == [[("demo-server1", Verb.REPLACE)]]
    poller = VipPoller(lab.network.vip or "")
    poller.start()
    time.sleep(1)
    try:
        deploy(lab, incus, ROOT, replace=["demo-server1"])
    finally:
        time.sleep(1)
        poller.stop.set()
        poller.join(10)
    after = uuids(incus, lab)
    assert {n for n in before if before[n] != after[n]} == {"demo-server1"}
    assert poller.ok > 20
    assert poller.failures == [], poller.failures[:5]
    dropin = incus.pull_file("demo-server1", JOIN_DROPIN).decode()
    assert f"server: https://{lab.network.vip}:9345" in dropin
    # The same etcd cluster, seen from the old members and from the new master.
    assert _cluster_id(incus, lab, "demo-server2") == cluster
    assert _cluster_id(incus, lab, "demo-server1") == cluster
    assert make_deploy_plan(lab, incus)[0].empty
    # The deploy retired the pristine set of the generation it replaced, on every survivor,
    # and a reset says so in one line.
    assert not [(n, s) for n in after for s in incus.snapshots(n) if s.startswith("plex-pristine-")]
    with pytest.raises(UsageError) as e:
        reset_to(lab, incus, ROOT, "pristine")
    assert e.value.message.startswith(
        "no pristine snapshot matches the deployed generation of plex 'demo': demo-"
    )
    assert "\n" not in e.value.message


def test_a_new_server_image_rolls_the_servers_with_the_api_up_through_the_vip(
    incus: PylxdIncus, lab: Plex, tmp_path: Path
) -> None:
    from plex.services.bake import Baker, Paths

    # A new server image generation: the recipe gained a file (same package layer).
    bake = tmp_path / "bake"
    shutil.copytree(ROOT / "bake", bake)
    (bake / "templates" / "test-generation.j2").write_text("generation 2 of {{ role }}\n")
    recipe = bake / "server.yaml"
    recipe.write_text(
        recipe.read_text().replace(
            "files:\n",
            "files:\n  - {path: /etc/plex-test-generation, template: test-generation.j2}\n",
            1,
        )
    )
    results = Baker(lab, incus, Paths(bake, ROOT / "images")).bake([Role.SERVER])
    assert not results[0].cached
    before = uuids(incus, lab)
    plan, _ = make_deploy_plan(lab, incus)
    assert plan.strategy is Strategy.ROLLING, plan.why
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-server1"],
        ["demo-server2"],
        ["demo-server3"],
    ]
    poller = VipPoller(lab.network.vip or "")
    poller.start()
    time.sleep(1)
    try:
        plan, result = deploy(lab, incus, ROOT)
    finally:
        time.sleep(1)
        poller.stop.set()
        poller.join(10)
    after = uuids(incus, lab)
    servers = {n.name for n in topology.nodes(lab) if n.role is Role.SERVER}
    assert {n for n in before if before[n] != after[n]} == servers
    assert [w.nodes for w in result.waves] == [["demo-server1"], ["demo-server2"], ["demo-server3"]]
    assert poller.ok > 20
    assert poller.failures == [], poller.failures[:5]
    # The master re-joined the running cluster through the VIP instead of bootstrapping one.
    dropin = incus.pull_file("demo-server1", JOIN_DROPIN).decode()
    assert f"server: https://{lab.network.vip}:9345" in dropin
    assert incus.exec("demo-server1", ["cat", "/etc/plex-test-generation"]).stdout == (
        "generation 2 of server\n"
    )
    assert make_deploy_plan(lab, incus)[0].empty
    assert all(
        i.config.get(owner.READY) == "true" for i in incus.observe(lab.name).instances.values()
    )
