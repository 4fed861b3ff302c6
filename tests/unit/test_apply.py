"""The wave runner over the in-memory Incus (the real one: integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plex.backends.incus.protocol import ExecResult
from plex.deploy import etcd
from plex.deploy.plan import Plan, make_plan, simulate_apply
from plex.deploy.probes import Probe, ProbeSet
from plex.deploy.spec import RoleProfile
from plex.errors import BackendError
from plex.model import owner
from plex.model.identity import TOKEN_FILE, VRRP_AUTH_FILE, Identity
from plex.model.image import ImageRef
from plex.model.observed import Observed, ObservedInstance
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex
from plex.services import rke2_hold
from plex.services.apply import Applier
from plex.services.node_create import JOIN_DROPIN
from plex.store.identity import ensure_identity
from tests.fixtures.fake_incus import Call, FakeIncus

ROOT = Path(__file__).resolve().parents[2]


class LabNodes:
    """What a lab's nodes answer plex's commands with, for FakeIncus.on_exec: haproxy's runtime
    API takes every line, keepalived holds the VIP on lb1, etcd's gateway on a server lists the
    servers that joined (there before this run, or started since they were created), and every
    other command (the probes: `echo ok`) prints ok."""

    def __init__(self, incus: FakeIncus, vip: str = "10.77.0.10") -> None:
        self.incus = incus
        self.vip = vip

    def __call__(self, name: str, argv: list[str]) -> ExecResult:
        if argv[0] == "python3":  # haproxy's runtime API: an empty line is a success
            return ExecResult(0, "\n", "")
        if argv[:2] == ["ip", "-o"]:
            holds = name.endswith("lb1")
            return ExecResult(0, f"2: eth0 inet {self.vip}/24 scope global" if holds else "", "")
        if argv[0] == "curl":  # plex.deploy.etcd.curl
            if not argv[-1].endswith("/member/list"):
                return ExecResult(0, "{}", "")
            # Members are named after their node (an evacuated copy's instance is not).
            servers = sorted(
                self.incus.configs.get(n, {}).get(owner.NODE, n)
                for n in self.incus.instances
                if "-server" in n and self.joined(n)
            )
            members = [{"ID": str(i), "name": n} for i, n in enumerate(servers)]
            return ExecResult(0, json.dumps({"members": members}), "")
        return ExecResult(0, "ok\n", "")

    def joined(self, name: str) -> bool:
        """A server's instance is a member from its start until its node's Node is deleted
        (RKE2 then removes its member)."""
        calls = self.incus.calls
        node = self.incus.configs.get(name, {}).get(owner.NODE, name)
        created = [i for i, c in enumerate(calls) if c[:2] == ("create", name)]
        deleted = [
            i
            for i, c in enumerate(calls)
            if c[0] == "exec" and str(c[2]).endswith(f"delete node {node}")
        ]
        if deleted and (not created or deleted[-1] > created[-1]):
            return False
        return not created or ("start", name) in calls[created[-1] :]


def lab(
    observed: Observed | None = None, *, vip: str = "10.77.0.10", drops_mode_header: bool = False
) -> FakeIncus:
    """A project holding `observed` (or nothing), its nodes answering as LabNodes."""
    incus = FakeIncus.holding(observed) if observed is not None else FakeIncus("plex-demo")
    incus.drops_mode_header = drops_mode_header
    incus.on_exec = LabNodes(incus, vip)
    return incus


def haproxy(calls: list[Call]) -> list[tuple[int, str, str]]:
    """The runtime API lines sent to each lb: (index in calls, lb, line)."""
    return [
        (i, c[1], c[3][-1]) for i, c in enumerate(calls) if c[0] == "exec" and c[3][0] == "python3"
    ]


Demo = tuple[Plex, Identity, dict[Role, ImageRef]]  # the demo fixture

PROBES = ProbeSet(common=(Probe("always", "echo ok", "^ok$", timeout=5),))
PROFILE = RoleProfile(config={}, devices={})


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Demo:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    identity, _ = ensure_identity(plex)
    images = {
        r: ImageRef(r, r.value[0] * 64, "f" * 63 + str(i), f"demo/{r.value}")
        for i, r in enumerate(Role)
    }
    return plex, identity, images


def test_each_node_gets_volume_keys_start_probes_then_ready(demo: Demo) -> None:
    plex, identity, images = demo
    plan = make_plan(
        plex, images, Observed("demo", "plex-demo"), profiles=dict.fromkeys(Role, PROFILE)
    )
    incus = lab()
    Applier(plex, incus, identity, PROBES, parallel=1).apply(plan)
    # The cache volume exists before the registry node that mounts it.
    assert incus.calls.index(("volume", "demo-registry-cache")) < next(
        i for i, c in enumerate(incus.calls) if c[:2] == ("create", "demo-registry1")
    )
    reg = [c for c in incus.calls if c[1] == "demo-registry1"]
    kinds = [c[0] for c in reg]
    assert kinds[0] == "create"
    assert kinds.index("push") < kinds.index("start") < kinds.index("exec") < kinds.index("config")
    assert reg[-1] == ("config", "demo-registry1", ((owner.READY, "true"),))
    keys = [(c[2], c[3]) for c in reg if c[0] == "push"]
    assert ("/etc/ssh/ssh_host_ed25519_key", 0o600) in keys
    assert ("/etc/ssh/ssh_host_rsa_key.pub", 0o644) in keys
    assert ("/etc/rancher/node/password", 0o600) not in keys  # not a kube node
    # A kube node also gets its RKE2 node password (0600, its directory made first).
    agent = [c[:4] for c in incus.calls if c[1] == "demo-agent1"]
    assert ("push", "demo-agent1", "/etc/rancher/node/password", 0o600) in agent
    assert (
        agent.index(("mkdir", "demo-agent1", "/etc/rancher/node"))
        < agent.index(("push", "demo-agent1", "/etc/rancher/node/password", 0o600))
        < agent.index(("start", "demo-agent1"))
    )
    # The secrets images no longer hold: the token to kube nodes, the VRRP password to lbs,
    # each pushed 0600 before the node starts.
    pushed = {(c[1], c[2]): c[3] for c in incus.calls if c[0] == "push"}
    assert pushed[("demo-server1", TOKEN_FILE)] == 0o600
    assert pushed[("demo-agent2", TOKEN_FILE)] == 0o600
    assert pushed[("demo-lb1", VRRP_AUTH_FILE)] == 0o600
    assert ("demo-lb1", TOKEN_FILE) not in pushed and ("demo-registry1", TOKEN_FILE) not in pushed
    server = [c[0] for c in incus.calls if c[1] == "demo-server1"]
    assert server.index("push") < server.index("start")
    # Waves in order: registry first, the master before every other kube node (they all join
    # once it is ready); every node ends ready.
    created = [c[1] for c in incus.calls if c[0] == "create"]
    assert created[0] == "demo-registry1"
    master = created.index("demo-server1")
    assert all(created.index(n) > master for n in ("demo-server2", "demo-server3", "demo-agent1"))
    ready = {c[1] for c in incus.calls if c[0] == "config"}
    assert ready == set(created)


def test_a_key_pushed_with_the_wrong_mode_stops_the_deploy(demo: Demo) -> None:
    plex, identity, images = demo
    plan = make_plan(
        plex, images, Observed("demo", "plex-demo"), profiles=dict.fromkeys(Role, PROFILE)
    )
    incus = lab(drops_mode_header=True)
    with pytest.raises(
        BackendError,
        match=r"demo-registry1: /etc/ssh/ssh_host_ed25519_key has "
        r"mode 0644, not 0600",
    ):
        Applier(plex, incus, identity, PROBES, parallel=1).apply(plan)
    assert ("start", "demo-registry1") not in incus.calls


def test_master_cascade_tears_down_dependents_before_the_new_master(demo: Demo) -> None:
    plex, identity, images = demo
    fresh = make_plan(
        plex, images, Observed("demo", "plex-demo"), profiles=dict.fromkeys(Role, PROFILE)
    )
    instances = {}
    for a in fresh.actions:
        assert a.spec is not None
        cfg = {k: v for k, v in a.spec.config.items() if k.startswith(owner.PREFIX)}
        cfg[owner.READY] = "true"
        instances[a.node] = ObservedInstance(a.node, "Running", f"u-{a.node}", cfg)
    observed = Observed("demo", "plex-demo", instances)
    plan = make_plan(
        plex, images, observed, replace=["master"], profiles=dict.fromkeys(Role, PROFILE)
    )
    incus = lab(observed)
    Applier(plex, incus, identity, PROBES, parallel=2).apply(plan)
    order = [(c[0], c[1]) for c in incus.calls if c[0] in ("delete", "create")]
    master_create = order.index(("create", "demo-server1"))
    torn_down = {n for kind, n in order[:master_create] if kind == "delete"}
    assert torn_down == {
        "demo-server1",
        "demo-server2",
        "demo-server3",
        "demo-agent1",
        "demo-agent2",
    }
    assert not any(
        c[1].startswith(("demo-lb", "demo-registry"))
        for c in incus.calls
        if c[0] in ("delete", "create")
    )


def master_cascade(demo: Demo) -> tuple[Observed, Plan]:
    """The demo deployed, and the plan of `--replace master` over it."""
    plex, _, images = demo
    fresh = make_plan(
        plex, images, Observed("demo", "plex-demo"), profiles=dict.fromkeys(Role, PROFILE)
    )
    deployed = simulate_apply(fresh, Observed("demo", "plex-demo"))
    plan = make_plan(
        plex, images, deployed, replace=["master"], profiles=dict.fromkeys(Role, PROFILE)
    )
    return deployed, plan


def test_cascade_creates_successors_during_teardown_and_starts_each_when_its_turn_comes(
    demo: Demo,
) -> None:
    plex, identity, _ = demo
    deployed, plan = master_cascade(demo)
    # Not the other servers' joins: everything after the master waits for it alone.
    assert plan.after["demo-agent1"] == ("demo-server1",)
    assert plan.after["demo-server3"] == ("demo-server1",)
    incus = lab(deployed)
    result = Applier(plex, incus, identity, PROBES, parallel=4).apply(plan)
    calls = [c[:2] for c in incus.calls]
    ready = {c[1]: i for i, c in enumerate(incus.calls) if c[0] == "config"}
    kube = ["demo-server1", "demo-server2", "demo-server3", "demo-agent1", "demo-agent2"]
    # Every successor exists before the new master starts; no agent starts before it is
    # ready. The other servers boot early, rke2-server held (the drop-in pushed before their
    # start), and are released once the master is ready (etcd admits them one at a time).
    first_start = calls.index(("start", "demo-server1"))
    assert all(calls.index(("create", n)) < first_start for n in kube)
    for n in kube[3:]:
        assert calls.index(("start", n)) > ready["demo-server1"]
    released = {}
    for n in kube[1:3]:
        assert calls.index(("push", n)) < calls.index(("start", n))
        hold = rke2_hold.dropin_path(Role.SERVER)
        assert any(c[:3] == ("push", n, hold) for c in incus.calls)
        assert incus.files[(n, hold)].mode == 0o644
        released[n] = next(
            i for i, c in enumerate(incus.calls) if c[:2] == ("exec", n) and hold in c[2]
        )
    assert released["demo-server2"] > ready["demo-server1"]
    assert released["demo-server3"] > ready["demo-server1"]
    # etcd's members are checked once both joined.
    member_lists = [i for i, c in enumerate(incus.calls) if "member/list" in str(c)]
    both = max(ready["demo-server2"], ready["demo-server3"])
    assert any(i > both for i in member_lists)
    assert set(result.spans) == set(kube)


def test_the_next_server_goes_once_etcd_counts_the_last_one_connected(demo: Demo) -> None:
    """etcd refuses a member add or remove until its leader has been connected to every voting
    member for 5 s (HealthInterval): a rolling change waits for the etcd of the server that just
    joined to have run that long (plus a margin) before it takes the next one down."""
    plex, identity, images = demo
    profiles = dict.fromkeys(Role, PROFILE)
    deployed = Observed(
        "demo",
        "plex-demo",
        deployed_state(make_plan(plex, images, Observed("demo", "plex-demo"), profiles=profiles)),
    )
    newer = {**images, Role.SERVER: ImageRef(Role.SERVER, "n" * 64, "e" * 64, "demo/server")}
    plan = make_plan(plex, newer, deployed, profiles=profiles)
    assert [[a.node for a in w] for w in plan.waves] == [
        ["demo-server1"],
        ["demo-server2"],
        ["demo-server3"],
    ]
    incus = lab(deployed)
    nodes = LabNodes(incus)

    def etcd_for_two_seconds(name: str, argv: list[str]) -> ExecResult:
        if argv[:3] == ["ps", "-o", "etimes="]:  # etcd has run for 2 s on every server
            return ExecResult(0, "      2\n", "")
        return nodes(name, argv)

    incus.on_exec = etcd_for_two_seconds
    applier = Applier(plex, incus, identity, PROBES, parallel=4)
    slept: list[tuple[int, float]] = []
    applier._sleep = lambda s: slept.append((len(incus.calls), s))
    applier.apply(plan)
    wait = etcd.HEALTH_INTERVAL + etcd.CONNECT_MARGIN - 2
    # After server1's wave and server2's; none after server3's (no server change follows it).
    assert [s for _, s in slept] == [wait, wait]
    asked = next(
        i
        for i, c in enumerate(incus.calls)
        if c[:2] == ("exec", "demo-server2") and c[2].startswith("ps -o etimes=")
    )
    created = incus.calls.index(next(c for c in incus.calls if c[:2] == ("create", "demo-server3")))
    assert asked < slept[1][0] <= created


def deployed_state(plan: Plan) -> dict[str, ObservedInstance]:
    instances = {}
    for a in plan.actions:
        assert a.spec is not None
        cfg = {k: v for k, v in a.spec.config.items() if k.startswith(owner.PREFIX)}
        cfg[owner.READY] = "true"
        instances[a.node] = ObservedInstance(a.node, "Running", f"u-{a.node}", cfg)
    return instances


def test_servers_leave_the_lbs_before_they_go_and_return_after_their_probes(demo: Demo) -> None:
    plex, identity, images = demo
    profiles = dict.fromkeys(Role, PROFILE)
    instances = deployed_state(
        make_plan(plex, images, Observed("demo", "plex-demo"), profiles=profiles)
    )
    observed = Observed("demo", "plex-demo", instances)
    plan = make_plan(plex, images, observed, replace=["master"], profiles=profiles)
    incus = lab(observed)
    Applier(plex, incus, identity, PROBES, parallel=2).apply(plan)
    calls = incus.calls
    first_delete = next(i for i, c in enumerate(calls) if c[0] == "delete")
    maint = [(lb, line) for i, lb, line in haproxy(calls) if i < first_delete]
    # Both lbs hear it, for every server of the old cluster, before anything is deleted.
    assert {lb for lb, _ in maint} == {"demo-lb1", "demo-lb2"}
    for server in ("demo-server1", "demo-server2", "demo-server3"):
        assert any(f"rke2-supervisor/{server} state maint" in line for _, line in maint)
    for server in ("demo-server1", "demo-server2", "demo-server3"):
        ready = next(
            i for i, _, line in haproxy(calls) if f"rke2-apiserver/{server} state ready" in line
        )
        probed = max(i for i, c in enumerate(calls[:ready]) if c[:2] == ("exec", server))
        created = calls.index(next(c for c in calls if c[:2] == ("create", server)))
        assert created < probed < ready
    assert not any("demo-agent" in line for _, _, line in haproxy(calls))


def test_a_rolled_master_gets_the_join_dropin(demo: Demo) -> None:
    plex, identity, images = demo
    profiles = dict.fromkeys(Role, PROFILE)
    instances = deployed_state(
        make_plan(plex, images, Observed("demo", "plex-demo"), profiles=profiles)
    )
    newer = {**images, Role.SERVER: ImageRef(Role.SERVER, "n" * 64, "e" * 64, "demo/server")}
    observed = Observed("demo", "plex-demo", instances)
    plan = make_plan(plex, newer, observed, profiles=profiles)
    incus = lab(observed)
    Applier(plex, incus, identity, PROBES, parallel=2).apply(plan)
    pushes = [c for c in incus.calls if c[0] == "push" and c[2] == JOIN_DROPIN]
    assert pushes == [("push", "demo-server1", JOIN_DROPIN, 0o600, 0, 0)]
    order = [c[1] for c in incus.calls if c[0] == "create"]
    assert order == ["demo-server1", "demo-server2", "demo-server3"]
    drains = [c for c in incus.calls if c[0] == "exec" and " drain demo-server1 " in c[2]]
    assert drains and drains[0][1] == "demo-server2"  # from a server that stays


def test_a_stopped_node_is_started_and_replaced_only_if_its_probes_fail(demo: Demo) -> None:
    plex, identity, images = demo
    profiles = dict.fromkeys(Role, PROFILE)
    instances = deployed_state(
        make_plan(plex, images, Observed("demo", "plex-demo"), profiles=profiles)
    )
    for name in ("demo-server1", "demo-agent2"):
        instances[name] = ObservedInstance(name, "Stopped", f"u-{name}", instances[name].config)
    observed = Observed("demo", "plex-demo", instances)
    plan = make_plan(plex, images, observed, profiles=profiles)
    incus = lab(observed)
    incus.broken.add("demo-agent2")  # its probes fail until it is re-created
    probes = ProbeSet(common=(Probe("always", "echo ok", "^ok$", timeout=0.3, interval=0.1),))
    Applier(plex, incus, identity, probes, parallel=2).apply(plan)
    assert ("start", "demo-server1") in incus.calls
    assert not any(
        c[:2] in (("create", "demo-server1"), ("delete", "demo-server1")) for c in incus.calls
    )
    # agent2 started, failed its probes, then was replaced.
    agent2 = [c[0] for c in incus.calls if c[1] == "demo-agent2" and c[0] != "exec"]
    assert agent2[:3] == ["start", "delete", "create"]
