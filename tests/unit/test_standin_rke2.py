"""The STAND-IN RKE2 release: its layout, and its server/agent/kubectl answering plex's probes.

The stand-in runs on the host here, in a temporary root (RKE2_STANDIN_ROOT) on free loopback
ports; inside node images it runs as /usr/local/bin/rke2 under systemd.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.build_standin import STANDIN_VERSION, build_standin_rke2
from tests.fixtures.rke2_rules import standin

TOKEN = "standin-test-token"
HEARTBEAT = "0.2"
GRACE = "1.5"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_standin_rke2(tmp_path_factory.mktemp("release"), bundle_containerd=False)


@pytest.fixture(scope="module")
def prefix(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball extracted like the real tar install (`tar xzf ... -C /usr/local`)."""
    usr_local = tmp_path_factory.mktemp("usr_local")
    with tarfile.open(release / "rke2.linux-amd64.tar.gz") as tar:
        tar.extractall(usr_local, filter="tar")
    return usr_local


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One stand-in process (`rke2 server` or `rke2 agent`) in its own root."""

    prefix: Path
    root: Path
    role: str
    config: dict[str, str]
    supervisor: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    etcd_client: int = field(default_factory=free_port)  # gRPC only, as RKE2's 2379
    etcd_http: int = field(default_factory=free_port)  # the JSON gateway, as RKE2's 2382
    etcd_peer: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    # The leader promotes learners on this tick (k3s: 15 s); short, so joins stay quick here.
    learner_tick: str = "2"
    # The address it listens on (its node-ip too, when it joins): k3s takes a nameless member
    # at a joiner's own address to be that joiner, so joiners at once need their own.
    ip: str = "127.0.0.1"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "RKE2_STANDIN_ROOT": str(self.root),
            "RKE2_STANDIN_BIND": self.ip,
            "RKE2_STANDIN_SUPERVISOR_PORT": str(self.supervisor),
            "RKE2_STANDIN_APISERVER_PORT": str(self.apiserver),
            "RKE2_STANDIN_ETCD_CLIENT_PORT": str(self.etcd_client),
            "RKE2_STANDIN_ETCD_HTTP_PORT": str(self.etcd_http),
            "RKE2_STANDIN_ETCD_PEER_PORT": str(self.etcd_peer),
            "RKE2_STANDIN_HEARTBEAT": HEARTBEAT,
            "RKE2_STANDIN_NODE_GRACE": GRACE,
            "RKE2_STANDIN_LEARNER_TICK": self.learner_tick,
            **extra,
        }

    def start(self, wait_ready: bool = True) -> Node:
        conf = self.root / "etc/rancher/rke2/config.yaml"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("".join(f"{k}: {v}\n" for k, v in self.config.items()))
        # systemd's notify protocol, on an abstract socket as systemd itself uses.
        name = f"@plex-standin-{secrets.token_hex(6)}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind("\0" + name[1:])
        # A cold etcd start takes seconds; on a loaded 2-core CI machine, past 15 s (seen twice in
        # full runs). A stand-in that never gets ready still fails, only later.
        notify.settimeout(60)
        self.proc = subprocess.Popen(
            [sys.executable, str(self.prefix / "bin/rke2"), self.role],
            # Not waited for: run as outside systemd (no socket a READY=1 would find closed).
            env=self.env(**({"NOTIFY_SOCKET": name} if wait_ready else {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with notify:
            if wait_ready:
                try:
                    ready = notify.recv(64)
                except TimeoutError:
                    ready = b"(timed out)"
                assert ready == b"READY=1", self.output()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    @property
    def kubeconfig(self) -> Path:
        return self.root / "etc/rancher/rke2/rke2.yaml"

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The kubectl stand-in that `rke2 server` installed, used the way plex's probes do."""
        kubectl = self.root / "var/lib/rancher/rke2/bin/kubectl"
        return subprocess.run(
            [sys.executable, str(kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def ready(self, node: str) -> str:
        r = self.kubectl(
            "get", "node", node, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
        )
        return r.stdout if r.returncode == 0 else f"error: {r.stderr.strip()}"


def wait_for(check: object, want: str, timeout: float = 10) -> str:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while (got := check()) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return str(got)


@pytest.fixture(scope="module")
def server(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("server-root")
    node = Node(
        prefix,
        root,
        "server",
        {"token": TOKEN, "node-name": "server-1", "node-ip": "127.0.0.1", "tls-san": "[10.0.0.10]"},
    )
    node.start()
    yield node
    node.stop()


@pytest.fixture
def agent_factory(prefix: Path, server: Node, tmp_path: Path) -> Iterator[object]:
    started: list[Node] = []

    def make(name: str, token: str = TOKEN, wait_ready: bool = True) -> Node:
        node = Node(
            prefix,
            tmp_path / name,
            "agent",
            {
                "token": token,
                "node-name": name,
                "server": f"https://127.0.0.1:{server.supervisor}",
            },
        )
        started.append(node)
        return node.start(wait_ready=wait_ready)

    yield make
    for n in started:
        n.stop()


def tls_get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # as haproxy/keepalived health checks do (curl -k)
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- the release -----------------------------------------------------------------------------


def test_release_is_laid_out_like_the_real_one(release: Path) -> None:
    assert release.name == STANDIN_VERSION
    assert sorted(p.name for p in release.iterdir()) == [
        "rke2-images.linux-amd64.tar.zst",
        "rke2-images.linux-amd64.txt",
        "rke2.linux-amd64.tar.gz",
        "sha256sum-amd64.txt",
    ]
    for line in (release / "sha256sum-amd64.txt").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((release / name).read_bytes()).hexdigest() == digest
    with tarfile.open(release / "rke2.linux-amd64.tar.gz") as tar:
        names = set(tar.getnames())
        rke2 = tar.getmember("bin/rke2")
    assert {
        "bin/rke2",
        "bin/rke2-killall.sh",
        "bin/rke2-uninstall.sh",
        "lib/systemd/system/rke2-server.service",
        "lib/systemd/system/rke2-agent.service",
    } <= names
    assert rke2.mode == 0o755 and rke2.uid == 0
    # Like the real release, no key material ships: the server makes its own at first start.
    with tarfile.open(release / "rke2.linux-amd64.tar.gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                # Bundled binaries (etcd) carry PEM parsers, not keys.
                assert data.startswith(b"\x7fELF") or b"PRIVATE KEY" not in data, m.name
    assert {"bin/etcd", "bin/etcdctl", "bin/zstd"} <= names


def test_airgap_tarball_lists_the_system_images(release: Path) -> None:
    """rke2-images.linux-amd64.tar.zst is `docker save` output holding what the .txt lists."""
    import io

    import zstandard

    refs = (release / "rke2-images.linux-amd64.txt").read_text().split()
    assert refs[0] == "docker.io/rancher/rke2-runtime:" + STANDIN_VERSION.replace("+", "-")
    raw = (
        zstandard.ZstdDecompressor()
        .decompressobj()
        .decompress((release / "rke2-images.linux-amd64.tar.zst").read_bytes())
    )
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == refs
        assert set(manifest[0]["Layers"]) <= set(tar.getnames())


def test_release_is_reproducible(release: Path, tmp_path: Path) -> None:
    again = build_standin_rke2(tmp_path, bundle_containerd=False)
    assert (again / "sha256sum-amd64.txt").read_text() == (
        release / "sha256sum-amd64.txt"
    ).read_text()


def test_everything_says_standin(prefix: Path) -> None:
    script = (prefix / "bin/rke2").read_text()
    assert script.startswith("#!/usr/bin/env python3\n# RKE2 STAND-IN FOR TESTS")
    out = subprocess.run(
        [str(prefix / "bin/rke2"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0] == f"rke2 version {STANDIN_VERSION} (stand-in for tests)"
    unit = (prefix / "lib/systemd/system/rke2-server.service").read_text()
    assert "stand-in for tests" in unit
    assert "Type=notify" in unit and "ExecStart=/usr/local/bin/rke2 server" in unit


# --- the server ------------------------------------------------------------------------------


def test_supervisor_ping_answers_pong_over_tls(server: Node, prefix: Path) -> None:
    assert tls_get(server.supervisor, "/ping") == (200, "pong")
    # The certificate the server made at start, issued by its server CA, verifies for
    # 127.0.0.1: strict clients work too.
    tls = server.root / "var/lib/rancher/rke2/server/tls"
    ctx = ssl.create_default_context(cafile=tls / "server-ca.crt")
    with urllib.request.urlopen(f"https://127.0.0.1:{server.supervisor}/ping", context=ctx) as r:
        assert r.read() == b"pong"


def test_readyz_needs_the_token_like_the_real_apiserver(server: Node) -> None:
    code, body = tls_get(server.apiserver, "/readyz")
    assert code == 401 and json.loads(body)["reason"] == "Unauthorized"
    assert tls_get(server.apiserver, "/readyz", token="wrong")[0] == 401
    assert tls_get(server.apiserver, "/readyz", token=TOKEN) == (200, "ok")


def test_server_writes_kubeconfig_and_node_token(server: Node) -> None:
    kubeconfig = server.kubeconfig.read_text()
    assert f"server: https://127.0.0.1:{server.apiserver}" in kubeconfig
    assert (server.kubeconfig.stat().st_mode & 0o777) == 0o600
    node_token = (server.root / "var/lib/rancher/rke2/server/node-token").read_text().strip()
    assert node_token.startswith("K10") and node_token.endswith(f"::server:{TOKEN}")


def test_kubectl_standin_readyz_and_own_node(server: Node) -> None:
    r = server.kubectl("get", "--raw", "/readyz")
    assert (r.returncode, r.stdout) == (0, "ok\n")
    assert server.ready("server-1") == "True"
    nodes = json.loads(server.kubectl("get", "nodes", "-o", "json").stdout)
    me = next(n for n in nodes["items"] if n["metadata"]["name"] == "server-1")
    assert me["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == "true"


def test_kubectl_standin_fails_like_kubectl_when_the_server_is_down(
    server: Node, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.yaml"
    port = free_port()
    dead.write_text(server.kubeconfig.read_text().replace(f":{server.apiserver}", f":{port}"))
    kubectl = server.root / "var/lib/rancher/rke2/bin/kubectl"
    r = subprocess.run(
        [sys.executable, str(kubectl), "--kubeconfig", str(dead), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert f"The connection to the server 127.0.0.1:{port} was refused" in r.stderr


def test_agent_joins_and_becomes_ready(server: Node, agent_factory: object) -> None:
    assert callable(agent_factory)
    assert server.ready("agent-1").startswith("error: Error from server (NotFound)")
    agent_factory("agent-1")
    assert wait_for(lambda: server.ready("agent-1"), "True") == "True"
    table = server.kubectl("get", "nodes").stdout
    assert "agent-1" in table and "server-1" in table


def test_a_stopped_agent_goes_not_ready(server: Node, agent_factory: object) -> None:
    assert callable(agent_factory)
    agent = agent_factory("agent-2")
    assert wait_for(lambda: server.ready("agent-2"), "True") == "True"
    agent.stop()
    assert wait_for(lambda: server.ready("agent-2"), "Unknown") == "Unknown"


def test_wrong_token_is_refused(server: Node, agent_factory: object) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(
        f"https://127.0.0.1:{server.supervisor}/v1-standin/join",
        data=json.dumps({"token": "nope", "name": "intruder", "role": "agent"}).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=5)
    assert err.value.code == 401

    assert callable(agent_factory)
    agent = agent_factory("agent-bad", token="wrong-token", wait_ready=False)
    assert agent.proc is not None
    assert agent.proc.wait(timeout=15) == 1
    assert "401 Unauthorized" in agent.output()
    assert server.ready("agent-bad").startswith("error: Error from server (NotFound)")


def pods_on(server: Node, node: str) -> list[str]:
    raw = server.kubectl("get", "--raw", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    assert raw.returncode == 0, raw.stderr
    return sorted(p["metadata"]["name"] for p in json.loads(raw.stdout)["items"])


def test_drain_refuses_what_kubectl_refuses_and_evicts_the_rest(
    server: Node, agent_factory: object
) -> None:
    """Every node runs canal's DaemonSet pod, the first server rke2-metrics-server (emptyDir):
    kubectl's drain needs --ignore-daemonsets everywhere and --delete-emptydir-data there."""
    assert callable(agent_factory)
    agent_factory("agent-5")
    assert wait_for(lambda: server.ready("agent-5"), "True") == "True"
    on_agent = pods_on(server, "agent-5")
    assert len(on_agent) == 1 and on_agent[0].startswith("rke2-canal-")
    r = server.kubectl("drain", "agent-5")
    assert r.returncode == 1
    assert r.stderr == (
        'error: unable to drain node "agent-5" due to error: cannot delete DaemonSet-managed '
        f"Pods (use --ignore-daemonsets to ignore): kube-system/{on_agent[0]}, continuing "
        "command...\nThere are pending nodes to be drained:\n agent-5\nerror: cannot delete "
        f"DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/{on_agent[0]}\n"
    )
    assert "Ready,SchedulingDisabled" in server.kubectl("get", "node", "agent-5").stdout
    assert server.kubectl("uncordon", "agent-5").returncode == 0

    metrics = [p for p in pods_on(server, "server-1") if p.startswith("rke2-metrics-server-")]
    assert len(metrics) == 1
    r = server.kubectl("drain", "server-1", "--ignore-daemonsets")
    assert r.returncode == 1
    assert (
        "cannot delete Pods with local storage (use --delete-emptydir-data to override): "
        f"kube-system/{metrics[0]}, continuing command..."
    ) in r.stderr
    assert pods_on(server, "server-1").count(metrics[0]) == 1  # nothing evicted
    r = server.kubectl("drain", "server-1", "--ignore-daemonsets", "--delete-emptydir-data")
    try:
        assert r.returncode == 0, r.stderr
        assert r.stderr.startswith(
            "Warning: ignoring DaemonSet-managed Pods: kube-system/rke2-canal-"
        )
        assert f"evicting pod kube-system/{metrics[0]}\npod/{metrics[0]} evicted\n" in r.stdout
        assert r.stdout.endswith("node/server-1 drained\n")
        # Its ReplicaSet's new pod lands on the one schedulable node left.
        moved = [p for p in pods_on(server, "agent-5") if p.startswith("rke2-metrics-server-")]
        assert len(moved) == 1 and moved != metrics
        assert not [p for p in pods_on(server, "server-1") if p.startswith("rke2-metrics")]
    finally:
        server.kubectl("uncordon", "server-1")
    # Deleting its node moves it again: to the server, the only node left.
    assert server.kubectl("delete", "node", "agent-5").returncode == 0
    assert [p for p in pods_on(server, "server-1") if p.startswith("rke2-metrics-server-")]


def test_drain_and_delete(server: Node, agent_factory: object) -> None:
    assert callable(agent_factory)
    agent_factory("agent-3")
    assert wait_for(lambda: server.ready("agent-3"), "True") == "True"
    r = server.kubectl("drain", "agent-3", "--ignore-daemonsets", "--delete-emptydir-data")
    assert r.returncode == 0 and "node/agent-3 drained" in r.stdout
    assert "Ready,SchedulingDisabled" in server.kubectl("get", "nodes").stdout
    r = server.kubectl("delete", "node", "agent-3")
    assert (r.returncode, r.stdout) == (0, 'node "agent-3" deleted\n')
    time.sleep(float(HEARTBEAT) * 3)  # its kubelet keeps beating, but a deleted node stays gone
    assert "agent-3" not in server.kubectl("get", "nodes", "-o", "name").stdout


def test_joining_server_sees_the_whole_cluster(
    server: Node, prefix: Path, tmp_path: Path, agent_factory: object
) -> None:
    assert callable(agent_factory)
    agent_factory("agent-4")
    second = Node(
        prefix,
        tmp_path / "server-2",
        "server",
        {
            "token": TOKEN,
            "node-name": "server-2",
            "node-ip": "127.0.0.1",
            "server": f"https://127.0.0.1:{server.supervisor}",
        },
    )
    try:
        second.start()
        assert wait_for(lambda: second.ready("agent-4"), "True") == "True"
        assert wait_for(lambda: server.ready("server-2"), "True") == "True"
        # A delete on one server reaches the other (as it would through etcd).
        assert second.kubectl("delete", "node", "agent-4").returncode == 0
        gone = "error: Error from serv"
        assert wait_for(lambda: server.ready("agent-4")[:22], gone) == gone
        # Leave a one-member etcd behind: deleting the Node removes its member.
        assert server.kubectl("delete", "node", "server-2").returncode == 0
        assert wait_for(lambda: str(etcd_members(server)), "['server-1']", 30) == "['server-1']"
    finally:
        second.stop()


CONTAINERD = Path("/usr/bin/containerd")


@pytest.mark.skipif(
    not CONTAINERD.is_file() or os.geteuid() != 0,
    reason="needs root and Debian's containerd package (bin/setup-incus installs it)",
)
def test_bundled_containerd_serves_the_rke2_socket(tmp_path: Path) -> None:
    release = build_standin_rke2(tmp_path / "release", bundle_containerd=True)
    usr_local = tmp_path / "usr_local"
    with tarfile.open(release / "rke2.linux-amd64.tar.gz") as tar:
        assert {"bin/containerd", "bin/ctr", "bin/containerd-shim-runc-v2"} <= set(tar.getnames())
        tar.extractall(usr_local, filter="tar")
    # A short root: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="rke2-", dir="/tmp"))
    node = Node(usr_local, root, "server", {"token": TOKEN, "node-ip": "127.0.0.1"})
    # Airgap: the runtime image comes from agent/images, so nothing is pulled (no registry
    # here; the default endpoint must never be tried from the test host).
    images = root / "var/lib/rancher/rke2/agent/images"
    images.mkdir(parents=True)
    shutil.copy(release / "rke2-images.linux-amd64.tar.zst", images)
    try:
        node.start()
        sock = root / "run/k3s/containerd/containerd.sock"
        r = subprocess.run(
            [str(usr_local / "bin/ctr"), "--address", str(sock), "version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0 and "Server:" in r.stdout, r.stderr
        conf = (root / "var/lib/rancher/rke2/agent/etc/containerd/config.toml").read_text()
        # Only the hosts RKE2 generates from registries.yaml, never /etc/containerd/certs.d.
        assert f'config_path = "{root}/var/lib/rancher/rke2/agent/etc/containerd/certs.d"' in conf
        r = subprocess.run(
            [
                str(usr_local / "bin/ctr"),
                "--address",
                str(sock),
                "-n",
                "k8s.io",
                "images",
                "ls",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        refs = (release / "rke2-images.linux-amd64.txt").read_text().split()
        assert set(refs) <= set(r.stdout.split()), r.stdout
        containerd_pid = int((root / "run/k3s/standin-containerd.pid").read_text())
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
    # Stopping rke2 stops the containerd it started.
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(containerd_pid, 0)
            time.sleep(0.1)


# --- node passwords, etcd ---------------------------------------------------------------------


def etcd_call(node: Node, path: str, body: dict[str, object] | None = None) -> dict[str, Any]:
    """One call to the node's etcd gateway, with RKE2's client certs; etcd's error as data."""
    tls = node.root / "var/lib/rancher/rke2/server/tls/etcd"
    ctx = ssl.create_default_context(cafile=str(tls / "server-ca.crt"))
    ctx.load_cert_chain(tls / "server-client.crt", tls / "server-client.key")
    req = urllib.request.Request(
        f"https://127.0.0.1:{node.etcd_http}{path}",
        data=json.dumps(body or {}).encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return dict(json.loads(e.read()))


def etcd_members(node: Node) -> list[str]:
    """The nodes of the node's etcd members, each named as k3s names them: `<node>-<8 hex>`."""
    names = [m.get("name", "") for m in etcd_call(node, "/v3/cluster/member/list")["members"]]
    assert all(re.fullmatch(r".+-[0-9a-f]{8}", n) for n in names), names
    return sorted(n[:-9] for n in names)


def learners(node: Node) -> list[dict[str, Any]]:
    return [m for m in etcd_call(node, "/v3/cluster/member/list")["members"] if m.get("isLearner")]


def joiner(prefix: Path, root: Path, name: str, leader: Node, ip: str = "127.0.0.1") -> Node:
    return Node(
        prefix,
        root,
        "server",
        {
            "token": TOKEN,
            "node-name": name,
            "node-ip": ip,
            "server": f"https://127.0.0.1:{leader.supervisor}",
        },
        ip=ip,
    )


def leader_and_joiner(prefix: Path, tmp_path: Path, learner_tick: str) -> tuple[Node, Node]:
    """A fresh one-server cluster (its leader promoting on `learner_tick`) and server-2."""
    leader = Node(
        prefix,
        tmp_path / "leader",
        "server",
        {"token": TOKEN, "node-name": "server-1", "node-ip": "127.0.0.1"},
        learner_tick=learner_tick,
    )
    return leader, joiner(prefix, tmp_path / "server-2", "server-2", leader)


@contextlib.contextmanager
def tcp_forward(listen: str, target: int) -> Iterator[int]:
    """A TCP pass-through on `listen` to 127.0.0.1:`target` (as haproxy in TCP mode in front
    of the supervisor): yields its port."""
    lsock = socket.create_server((listen, 0))
    lsock.settimeout(0.2)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", target))
            except OSError:
                client.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield lsock.getsockname()[1]
    finally:
        stop.set()
        lsock.close()


@pytest.mark.parametrize("in_tls_san", [False, True])
def test_a_server_joins_through_a_vip_only_if_tls_san_names_it(
    prefix: Path, tmp_path: Path, in_tls_san: bool
) -> None:
    """k3s validates a joiner's `server:` against the supervisor's certificate, which names a
    VIP only through tls-san (tls-san-security); an agent goes through its own local load
    balancer at 127.0.0.1 and needs only the chain to the cluster CA."""
    vip = "127.0.0.9"
    leader_cfg = {"token": TOKEN, "node-name": "server-1", "node-ip": "127.0.0.1"}
    if in_tls_san:
        leader_cfg["tls-san"] = f"[{vip}, api.example.test]"
    leader = Node(prefix, tmp_path / "leader", "server", leader_cfg, learner_tick="1")
    leader.start()
    with tcp_forward(vip, leader.supervisor) as port:
        url = f"https://{vip}:{port}"
        second = Node(
            prefix,
            tmp_path / "server-2",
            "server",
            {"token": TOKEN, "node-name": "server-2", "node-ip": "127.0.0.2", "server": url},
            ip="127.0.0.2",
        )
        agent = Node(
            prefix,
            tmp_path / "agent-1",
            "agent",
            {"token": TOKEN, "node-name": "agent-1", "server": url},
        )
        try:
            agent.start()  # no SAN needed
            if in_tls_san:
                second.start()
                assert wait_for(lambda: leader.ready("server-2"), "True", 30) == "True"
                # Both servers' certificates chain to the one CA the joiner took.
                tls = tmp_path / "{}/var/lib/rancher/rke2/server/tls/server-ca.crt"
                cas = {Path(str(tls).format(n)).read_bytes() for n in ("leader", "server-2")}
                assert len(cas) == 1
            else:
                second.start(wait_ready=False)
                assert second.proc is not None
                assert second.proc.wait(timeout=30) == 1
                out = second.output()
                assert (
                    f'level=fatal msg="failed to validate token: CA cert validation failed: Get '
                    f'"{url}/cacerts": tls: failed to verify certificate: IP address '
                    f"mismatch, certificate is not valid for '{vip}'."
                ) in out, out
        finally:
            agent.stop()
            second.stop()
            leader.stop()


def test_server_certificate_names_what_k3s_puts_in_it() -> None:
    rke2 = standin()
    sans = rke2.serving_sans(
        {"tls-san": ["10.0.0.10", "api.lab", "10.0.0.10"], "service-cidr": "10.96.0.0/12"},
        "server-1",
        "10.0.0.11",
    )
    assert sans == [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        "IP:::1",
        "IP:10.96.0.1",
        "DNS:server-1",
        "IP:10.0.0.11",
        "IP:10.0.0.10",
        "DNS:api.lab",
    ]
    assert "IP:10.43.0.1" in rke2.serving_sans({}, "s", "10.0.0.11")  # RKE2's service CIDR


def test_the_stand_in_promotes_learners_on_k3s_tick() -> None:
    # Pinned: k3s pkg/etcd/etcd.go manageTickerTime; pkg/cluster/managed.go testClusterDB.
    rke2 = standin()
    assert (rke2.LEARNER_TICK, rke2.DATASTORE_TEST_INTERVAL) == (15.0, 5.0)
    assert rke2.DATASTORE_TEST_TIMEOUT == 30.0  # testTimeout, since k3s#5882
    assert rke2.JOIN_TIMEOUT == 20.0  # k3s pkg/etcd/etcd.go join's clientCtx
    assert rke2.JOIN_RETRY_INTERVAL == 1.0  # ETCD.Start's PollUntilContextCancel, since k3s#7000


@pytest.mark.parametrize(
    ("refusal", "logged"),
    [
        (
            "etcdserver: too many learner members in cluster",
            "Waiting for other members to finish joining etcd cluster: "
            "etcdserver: too many learner members in cluster",
        ),
        (
            "etcdserver: unhealthy cluster",
            "Waiting for other members to finish joining etcd cluster: "
            "etcdserver: unhealthy cluster",
        ),
        (
            "failed to get MemberList from server: etcdserver: request timed out",
            "Waiting to retrieve etcd cluster member list: "
            "failed to get MemberList from server: etcdserver: request timed out",
        ),
    ],
)
def test_a_join_waits_out_what_k3s_waits_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], refusal: str, logged: str
) -> None:
    rke2 = standin()
    answers: list[object] = [rke2.Refused(refusal), rke2.Refused(refusal), {"initial_cluster": "x"}]
    slept: list[float] = []

    def call(*args: object, **kwargs: object) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(rke2, "supervisor_call", call)
    monkeypatch.setattr(rke2.time, "sleep", slept.append)
    assert rke2.join_etcd({}, {}) == "x"
    assert slept == [1.0, 1.0]
    assert capsys.readouterr().out.count(f'level=info msg="{logged}"') == 2


@pytest.mark.parametrize(
    "refusal",
    [
        "duplicate node name found, please use a unique name for this node",
        "context deadline exceeded",
    ],
)
def test_any_other_join_refusal_is_fatal(monkeypatch: pytest.MonkeyPatch, refusal: str) -> None:
    rke2 = standin()

    def call(*args: object, **kwargs: object) -> object:
        raise rke2.Refused(refusal)

    def fatal(msg: str) -> None:
        raise RuntimeError(msg)

    monkeypatch.setattr(rke2, "supervisor_call", call)
    monkeypatch.setattr(rke2, "fatal", fatal)
    with pytest.raises(RuntimeError) as e:
        rke2.join_etcd({}, {})
    assert str(e.value) == f"etcd cluster join failed: {refusal}"


def test_servers_joining_at_once_are_admitted_one_at_a_time(prefix: Path, tmp_path: Path) -> None:
    """k3s retries a join etcd refuses for another member's sake every second, in-process:
    two servers started together both join, neither exits."""
    leader = Node(
        prefix,
        tmp_path / "leader",
        "server",
        {"token": TOKEN, "node-name": "server-1", "node-ip": "127.0.0.1"},
        learner_tick="1",
    )
    second = joiner(prefix, tmp_path / "server-2", "server-2", leader, "127.0.0.2")
    third = joiner(prefix, tmp_path / "server-3", "server-3", leader, "127.0.0.3")
    try:
        leader.start()
        second.start(wait_ready=False)
        third.start(wait_ready=False)
        for name in ("server-2", "server-3"):
            # Two cold etcd starts and a 5 s health wait in between, on a loaded CI machine.
            got = wait_for(lambda n=name: leader.ready(n), "True", 90)
            assert got == "True", second.output() + third.output()
        assert second.alive() and third.alive()
        assert etcd_members(leader) == ["server-1", "server-2", "server-3"]
    finally:
        second.stop()
        third.stop()
        leader.stop()
    out = second.output() + third.output()
    assert "Waiting for other members to finish joining etcd cluster: etcdserver: " in out, out
    assert "level=fatal" not in out, out


def test_a_joining_server_is_a_learner_until_the_leaders_tick_promotes_it(
    prefix: Path, tmp_path: Path
) -> None:
    # The tick comes well after the join (the leader takes seconds to start, and the joiner
    # validates the supervisor's certificate and takes the CA first).
    leader, second = leader_and_joiner(prefix, tmp_path, learner_tick="10")
    try:
        started = time.monotonic()  # the leader's ticker starts after this
        leader.start()
        second.start(wait_ready=False)
        # Timeouts allow for a cold etcd start on a loaded CI machine (see Node.start).
        assert wait_for(lambda: str(len(learners(leader))), "1", 30) == "1", second.output()
        # A learner answers only Status: the server cannot register itself yet.
        assert leader.ready("server-2").startswith("error: ")
        assert wait_for(lambda: str(len(learners(leader))), "0", 40) == "0", second.output()
        # Promoted on the leader's first tick, not before; up at its next datastore test.
        assert time.monotonic() - started >= 10
        assert wait_for(lambda: leader.ready("server-2"), "True", 15) == "True"
        assert etcd_members(leader) == ["server-1", "server-2"]
    finally:
        second.stop()
        leader.stop()
    out = second.output()
    assert "this server has not yet been promoted from learner to voting member" in out, out
    assert re.search(r"Promoted learner server-2-[0-9a-f]{8}\b", leader.output())


def test_a_learner_promoted_by_anyone_is_up_at_its_next_datastore_test(
    prefix: Path, tmp_path: Path
) -> None:
    # The leader's own promotion never comes in this test.
    leader, second = leader_and_joiner(prefix, tmp_path, learner_tick="600")
    try:
        leader.start()
        second.start(wait_ready=False)
        promoted = None
        # A cold etcd start on a loaded CI machine can take past 15 s (see Node.start).
        deadline = time.monotonic() + 60
        while promoted is None and time.monotonic() < deadline:
            assert second.alive(), second.output()
            for m in learners(leader):
                answer = etcd_call(leader, "/v3/cluster/member/promote", {"ID": m["ID"]})
                if "error" not in answer:
                    promoted = time.monotonic()
                else:  # not in sync with the leader yet: etcd's own refusal
                    assert "in sync with leader" in answer["message"], answer
            time.sleep(0.2)
        assert promoted is not None, f"{etcd_call(leader, '/v3/cluster/member/list')}\n" + (
            second.output()
        )
        assert wait_for(lambda: leader.ready("server-2"), "True", 15) == "True"
        # Up at its next datastore test, not the one after (5 s apart); slack for a loaded host.
        assert time.monotonic() - promoted < 2 * 5
    finally:
        second.stop()
        leader.stop()


# etcd 3.4.23's answers on a member whose leader is gone (its peer stopped), measured by hand:
# status lists the error, defragment is local and answers, an alarm list waits for raft.
NO_LEADER_STATUS: dict[str, object] = {
    "header": {"member_id": "1"},
    "errors": ["etcdserver: no leader"],
}


@pytest.mark.parametrize(
    ("alarm_blocks", "want"),
    [
        (True, "failed to report and disarm etcd alarms: context deadline exceeded"),
        (False, "etcd cluster errors: etcdserver: no leader"),
    ],
)
def test_the_datastore_test_fails_without_a_leader_as_k3s_does(
    monkeypatch: pytest.MonkeyPatch, alarm_blocks: bool, want: str
) -> None:
    rke2 = standin()
    monkeypatch.setattr(rke2, "DATASTORE_TEST_TIMEOUT", 0.3)
    asked: list[str] = []

    def etcd(path: str, body: dict[str, object], timeout: float = 10) -> dict[str, object]:
        asked.append(path)
        if path == "/v3/maintenance/alarm" and alarm_blocks:
            time.sleep(timeout)
            raise rke2.EtcdError("etcd at https://127.0.0.1:2382 is unreachable: timed out")
        return NO_LEADER_STATUS if path == "/v3/maintenance/status" else {}

    monkeypatch.setattr(rke2, "etcd", etcd)
    with pytest.raises(rke2.EtcdError) as e:
        rke2.datastore_test("server-1-0a0b0c0d", "https://127.0.0.1:2380")
    assert str(e.value) == want
    # k3s Test's order: status, defragment, alarms, status again; never the member list.
    order = ["/v3/maintenance/status", "/v3/maintenance/defragment", "/v3/maintenance/alarm"]
    assert asked == (order if alarm_blocks else [*order, "/v3/maintenance/status"])


def plex_etcd_query(node: Node, port: int, *curl_opts: str) -> subprocess.CompletedProcess[str]:
    """plex's own member-list query (plex.deploy.etcd.curl), pointed at this node's certificates
    and at `port` in place of RKE2's 2382."""
    from plex.deploy import etcd

    tls = str(node.root / "var/lib/rancher/rke2/server/tls/etcd")
    argv = [a.replace(etcd.TLS, tls) for a in etcd.curl(etcd.MEMBERS)]
    assert argv[-1].startswith("https://127.0.0.1:2382/")
    argv[-1] = argv[-1].replace(":2382/", f":{port}/", 1)
    return subprocess.run(
        [argv[0], *curl_opts, *argv[1:]], capture_output=True, text=True, timeout=30
    )


def test_etcds_client_port_serves_grpc_only_and_http_has_its_own(server: Node) -> None:
    """RKE2 v1.31 (k3s-io/k3s#8402): etcd's JSON gateway answers on the HTTP listener (2382);
    on the client port (2379) an HTTP request meets grpc-go: HTTP/2 is answered 415 with no
    body (rancher/rke2#7170), HTTP/1.1 is not spoken, and TLS wants the client certificate."""
    served = plex_etcd_query(server, server.etcd_http)
    assert served.returncode == 0, served.stderr
    assert [m["name"][:-9] for m in json.loads(served.stdout)["members"]] == ["server-1"]

    refused = plex_etcd_query(server, server.etcd_client, "-w", "%{http_version} %{http_code}")
    assert (refused.returncode, refused.stdout) == (0, "2 415"), refused.stderr
    h1 = plex_etcd_query(server, server.etcd_client, "--http1.1")
    assert h1.returncode != 0 and h1.stdout == "", h1
    # Without a client certificate neither port takes the request (k3s: ClientCertAuth).
    tls = server.root / "var/lib/rancher/rke2/server/tls/etcd"
    for port in (server.etcd_client, server.etcd_http):
        url = f"https://127.0.0.1:{port}/v3/cluster/member/list"
        argv = ["curl", "-sS", "--max-time", "5", "--cacert", str(tls / "server-ca.crt"), url]
        anonymous = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert anonymous.returncode != 0 and anonymous.stdout == "", anonymous


def test_etcd_takes_one_learner_at_a_time(server: Node, tmp_path: Path) -> None:
    fake = "http://127.0.0.2:2380"  # another host: a nameless member at ours would be us (k3s)
    added = etcd_call(server, "/v3/cluster/member/add", {"peerURLs": [fake], "isLearner": True})
    try:
        code, text = supervisor_post(
            server,
            "/v1-standin/etcd-join",
            {"name": "server-9", "member": "server-9-0a0b0c0d", "peer_url": "http://127.0.0.1:1"},
        )
        assert (code, text.strip()) == (503, "etcdserver: too many learner members in cluster")
    finally:
        etcd_call(server, "/v3/cluster/member/remove", {"ID": added["member"]["ID"]})
    assert etcd_members(server) == ["server-1"]


def test_a_node_whose_old_member_is_still_in_etcd_cannot_join(server: Node, tmp_path: Path) -> None:
    """k3s refuses a second member for one node name; the earlier life's member must go
    first (deleting its Node does that). The joiner exits and systemd restarts it."""
    code, text = supervisor_post(
        server,
        "/v1-standin/etcd-join",
        {"name": "server-1", "member": "server-1-00000000", "peer_url": "http://127.0.0.1:9"},
    )
    assert (code, text.strip()) == (
        503,
        "duplicate node name found, please use a unique name for this node",
    )
    assert etcd_members(server) == ["server-1"]


def supervisor_post(node: Node, path: str, body: dict[str, str]) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(
        f"https://127.0.0.1:{node.supervisor}{path}",
        data=json.dumps({"token": TOKEN, **body}).encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_same_name_with_another_password_is_refused_until_the_node_is_deleted(
    server: Node, agent_factory: object
) -> None:
    assert callable(agent_factory)
    first = agent_factory("agent-5")
    assert wait_for(lambda: server.ready("agent-5"), "True") == "True"
    pw_file = first.root / "etc/rancher/node/password"
    assert len(pw_file.read_text().strip()) == 32 and pw_file.stat().st_mode & 0o777 == 0o600
    first.stop()
    # Another machine (its own /etc/rancher/node/password) under the same name.
    impostor = Node(first.prefix, first.root.with_name("impostor"), "agent", first.config)
    impostor.start(wait_ready=False)
    time.sleep(1.5)
    out = impostor.output()
    assert (
        "Waiting to retrieve agent configuration; server is not ready: Node password rejected, "
        "duplicate hostname or contents of '/etc/rancher/node/password' may not match server "
        "node-passwd entry, try enabling a unique node name with the --with-node-id flag"
    ) in out
    # The same machine again (same password file) is welcome.
    first.start()
    assert wait_for(lambda: server.ready("agent-5"), "True") == "True"
    first.stop()
    assert server.kubectl("delete", "node", "agent-5").returncode == 0
    agent_factory("agent-5")  # once the Node is deleted, a new password is accepted
    assert wait_for(lambda: server.ready("agent-5"), "True") == "True"


def test_deleting_a_server_node_removes_its_etcd_member(
    server: Node, prefix: Path, tmp_path: Path
) -> None:
    joiner = Node(
        prefix,
        tmp_path / "server-3",
        "server",
        {
            "token": TOKEN,
            "node-name": "server-3",
            "node-ip": "127.0.0.1",
            "server": f"https://127.0.0.1:{server.supervisor}",
        },
    )
    try:
        joiner.start()
        assert etcd_members(server) == ["server-1", "server-3"]
        assert etcd_members(joiner) == ["server-1", "server-3"]
        # While both run (with one of two members down there is no quorum to delete with).
        assert server.kubectl("delete", "node", "server-3").returncode == 0
        assert wait_for(lambda: str(etcd_members(server)), "['server-1']", 30) == "['server-1']"
    finally:
        joiner.stop()


def test_without_quorum_readyz_and_writes_fail_with_etcds_error(
    prefix: Path, tmp_path: Path
) -> None:
    first = Node(
        prefix,
        tmp_path / "q1",
        "server",
        {"token": TOKEN, "node-name": "q1", "node-ip": "127.0.0.1"},
    ).start()
    second = Node(
        prefix,
        tmp_path / "q2",
        "server",
        {
            "token": TOKEN,
            "node-name": "q2",
            "node-ip": "127.0.0.1",
            "server": f"https://127.0.0.1:{first.supervisor}",
        },
    )
    try:
        second.start()
        assert first.kubectl("get", "--raw", "/readyz").stdout == "ok\n"
        second.stop()  # 1 of 2 members left: no quorum
        r = wait_for(
            lambda: str(
                "[-]etcd failed: etcdserver: " in first.kubectl("get", "--raw", "/readyz").stderr
            ),
            "True",
            30,
        )
        assert r == "True"
        r2 = first.kubectl("get", "--raw", "/readyz")
        assert r2.returncode == 1 and "etcdserver: " in r2.stderr, r2.stderr
        r3 = first.kubectl("cordon", "q1")
        assert r3.returncode == 1 and "etcdserver: " in r3.stderr, r3.stderr
        second.start()  # quorum back
        assert (
            wait_for(lambda: first.kubectl("get", "--raw", "/readyz").stdout, "ok\n", timeout=30)
            == "ok\n"
        )
    finally:
        second.stop()
        first.stop()


# --- registries.yaml -> hosts.toml (k3s pkg/agent/containerd/config.go) ------------------------


@pytest.mark.parametrize(
    ("endpoint", "url", "override"),
    [
        # Cases of k3s normalizeEndpointAddress (its config_test.go table).
        ("http://10.0.0.5:5000/v2/docker.io", "http://10.0.0.5:5000/v2/docker.io", True),
        ("http://10.0.0.5:5001", "http://10.0.0.5:5001/v2", False),
        ("http://10.0.0.5:5001/", "http://10.0.0.5:5001/v2", False),
        ("http://10.0.0.5:5001/v2", "http://10.0.0.5:5001/v2", False),
        ("https://mirror.example/prefix", "https://mirror.example/prefix", True),
        ("mirror.example", "https://mirror.example/v2", False),
        ("localhost:5000", "http://localhost:5000/v2", False),
        ("docker.io", "https://registry-1.docker.io/v2", False),
    ],
)
def test_endpoint_normalisation_follows_k3s(endpoint: str, url: str, override: bool) -> None:
    mod = standin()
    assert mod.normalize_endpoint(endpoint)[1:] == (url, override)


def test_hosts_toml_from_registries_yaml() -> None:
    import yaml

    mod = standin()
    doc = {
        "mirrors": {
            "docker.io": {"endpoint": ["http://10.0.0.5:5000/v2/docker.io"]},
            "quay.io": {"endpoint": ["https://10.0.0.5:5443"]},
        },
        "configs": {
            "10.0.0.5:5443": {
                "tls": {"ca_file": "/etc/ssl/plex.crt", "insecure_skip_verify": True},
                "auth": {"username": "u", "password": "p"},
            }
        },
    }
    # What RKE2 reads is the YAML text: through the stand-in's own reader.
    files = mod.hosts_toml_files(mod.parse_yaml_tree(yaml.safe_dump(doc, sort_keys=False)))
    assert files["docker.io"] == (
        "# File generated by rke2. DO NOT EDIT.\n"
        'server = "https://registry-1.docker.io/v2"\n'
        'capabilities = ["pull", "resolve", "push"]\n'
        "\n"
        '[host."http://10.0.0.5:5000/v2/docker.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
    )
    assert '[host."https://10.0.0.5:5443/v2"]' in files["quay.io"]
    assert '  ca = ["/etc/ssl/plex.crt"]\n  skip_verify = true' in files["quay.io"]
    # The host with only a config gets its own file for its TLS settings.
    assert "skip_verify = true" in files["10.0.0.5:5443"]
    assert mod.registry_auths(doc) == {"10.0.0.5:5443": {"username": "u", "password": "p"}}


def test_the_stdlib_yaml_reader_agrees_with_pyyaml_on_registries_yaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    import yaml

    mod = standin()
    real_import = builtins.__import__

    def no_yaml(name: str, *a: object, **k: object) -> object:
        if name == "yaml":
            raise ImportError(name)
        return real_import(name, *a, **k)  # type: ignore[arg-type]

    doc = {
        "mirrors": {
            "docker.io": {"endpoint": ["http://10.0.0.5:5001", "https://r.example"]},
            "*": {"endpoint": ["http://10.0.0.5:5002"]},
        },
        "configs": {"10.0.0.5:5001": {"tls": {"insecure_skip_verify": True}}},
    }
    monkeypatch.setattr(builtins, "__import__", no_yaml)
    got = mod.parse_yaml_tree(yaml.safe_dump(doc))
    assert got == doc
