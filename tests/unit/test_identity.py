"""Plex identity: stable across runs, private on disk, agreeing with ssh-keygen, rotated on demand.

Real keys (SystemKeyGen) and the real CLI, with PLEX_STATE_DIR and PLEX_HOME under tmp_path. The
demo identity is generated once per module (16 keys, 8 of them RSA-3072) and copied per test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.__main__ import main
from plex.model import identity as ident
from plex.model.identity import HostKey, compute_identity
from plex.model.plex import Role
from plex.plexfile.load import load_plex, parse_plex

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "plexes" / "demo.yaml"
# Every reserved node: the demo runs 2 agents of a capacity of 4.
DEMO_NODES = [
    "demo-registry1",
    "demo-lb1",
    "demo-lb2",
    "demo-server1",
    "demo-server2",
    "demo-server3",
    "demo-agent1",
    "demo-agent2",
    "demo-agent3",
    "demo-agent4",
]

# relpath -> (mode, bytes or None for a directory, inode)
Snapshot = dict[str, tuple[int, bytes | None, int]]


def lines_of(snap: Snapshot, name: str) -> set[str]:
    """The lines of file `name` in a snapshot (a directory has none)."""
    data = snap[name][1]
    assert data is not None, f"{name} is a directory"
    return set(data.decode().splitlines())


def snapshot(root: Path) -> Snapshot:
    out: Snapshot = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (
            st.st_mode & 0o7777,
            None if p.is_dir() else p.read_bytes(),
            st.st_ino,
        )
    return out


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    """Paths added, removed, or whose bytes or mode differ."""
    keys = before.keys() | after.keys()
    return {k for k in keys if before.get(k, (0, b"", 0))[:2] != after.get(k, (0, b"", 0))[:2]}


def key_files(node: str) -> set[str]:
    """A node's private identity files: host keys, and the RKE2 node password of kube nodes."""
    files = {
        f"nodes/{node}/ssh_host_{kind}_key{ext}"
        for kind in ("ed25519", "rsa")
        for ext in ("", ".pub")
    }
    if "-server" in node or "-agent" in node:
        files.add(f"nodes/{node}/node-password")
    return files


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding the demo identity, generated once through the CLI."""
    state = tmp_path_factory.mktemp("template-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLEX_STATE_DIR", str(state))
        mp.setenv("PLEX_HOME", str(REPO))
        assert main(["identity", "demo"]) == 0
    return state


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PLEX_HOME with a copy of the demo plex that a test may edit."""
    (tmp_path / "home" / "plexes").mkdir(parents=True)
    shutil.copy(DEMO_YAML, tmp_path / "home" / "plexes" / "demo.yaml")
    monkeypatch.setenv("PLEX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def idir(template: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own copy of the generated identity; returns <state>/demo/identity."""
    state = tmp_path / "state"
    shutil.copytree(template, state)  # copy2 + copystat: bytes and modes as generated
    monkeypatch.setenv("PLEX_STATE_DIR", str(state))
    return state / "demo" / "identity"


def set_count(home: Path, role: str, count: int) -> None:
    path = home / "plexes" / "demo.yaml"
    data = yaml.safe_load(path.read_text())
    data["roles"][role]["count"] = count
    path.write_text(yaml.safe_dump(data))


# --- layout, stability, modes


def test_layout(idir: Path) -> None:
    assert sorted(p.name for p in idir.iterdir()) == [
        "deploy_key",
        "deploy_key.pub",
        "hosts",
        "nodes",
        "secrets.json",
        "ssh_known_hosts",
    ]
    assert sorted(p.name for p in (idir / "nodes").iterdir()) == sorted(DEMO_NODES)
    secrets = json.loads((idir / "secrets.json").read_text())
    assert len(secrets["token"]) == 48 and secrets["token"].isalnum()
    assert len(secrets["vrrp_secret"]) == 8 and secrets["vrrp_secret"].isalnum()
    # plex's SSH client key (VM nodes authorize it): private 0600, comment names the plex.
    assert (idir / "deploy_key").stat().st_mode & 0o777 == 0o600
    assert (idir / "deploy_key.pub").read_text().startswith("ssh-ed25519 ")
    assert (idir / "deploy_key.pub").read_text().strip().endswith(" plex@demo")


def test_running_again_changes_no_byte_mode_or_file(idir: Path, cli: Cli) -> None:
    before = snapshot(idir)
    result = cli("identity", "demo")
    assert result.code == 0
    assert "complete and unchanged" in result.err
    after = snapshot(idir)
    assert after == before  # bytes, modes and inodes: nothing was even rewritten


def test_private_files_are_0600_and_dirs_0700(idir: Path) -> None:
    state = idir.parent.parent
    dirs = [state, idir.parent, idir, *(p for p in idir.rglob("*") if p.is_dir())]
    files = [p for p in idir.rglob("*") if p.is_file()]
    # hosts, ssh_known_hosts, secrets.json, the deploy key pair, then the nodes' files
    assert len(files) == 5 + sum(len(key_files(n)) for n in DEMO_NODES)
    assert {oct(d.stat().st_mode & 0o777) for d in dirs} == {"0o700"}
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}


def test_modes_are_repaired_without_rewriting(idir: Path, cli: Cli) -> None:
    key = idir / "nodes" / "demo-lb1" / "ssh_host_ed25519_key"
    key.chmod(0o644)
    data = key.read_bytes()
    assert cli("identity", "demo").code == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert key.read_bytes() == data


def test_ssh_keygen_agrees_with_identity_show(idir: Path, cli: Cli) -> None:
    result = cli("identity", "show", "demo", "-o", "json")
    assert result.code == 0
    shown = json.loads(result.out)
    assert shown["plex"] == "demo"
    assert len(shown["keys"]) == 2 * len(DEMO_NODES)
    for row in shown["keys"]:
        pub = idir / "nodes" / row["node"] / f"ssh_host_{row['type']}_key.pub"
        bits, fingerprint, comment, kind = subprocess.run(
            ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert fingerprint == row["fingerprint"]
        assert comment == f"root@{row['node']}"
        assert kind == {"ed25519": "(ED25519)", "rsa": "(RSA)"}[row["type"]]
        assert bits == {"ed25519": "256", "rsa": "3072"}[row["type"]]


def test_private_and_public_keys_are_a_pair(idir: Path) -> None:
    # ssh-keygen -y also refuses a private key readable by others: the mode is checked too.
    for node in ("demo-lb1", "demo-server3"):
        for kind in ("ed25519", "rsa"):
            priv = idir / "nodes" / node / f"ssh_host_{kind}_key"
            derived = subprocess.run(
                ["ssh-keygen", "-y", "-f", str(priv)], capture_output=True, text=True, check=True
            ).stdout.split()[:2]
            assert derived == priv.with_suffix(".pub").read_text().split()[:2]


def test_show_table_lists_every_node(idir: Path, cli: Cli) -> None:
    result = cli("identity", "show", "demo")
    assert result.code == 0
    for node in DEMO_NODES:
        assert node in result.out


def test_known_hosts_and_hosts_cover_every_node(idir: Path) -> None:
    known = (idir / "ssh_known_hosts").read_text().splitlines()[1:]
    assert len(known) == 2 * len(DEMO_NODES)
    assert known[0].startswith("demo-registry1,demo-registry1.demo.plex.internal,10.77.0.5 ")
    pub = (idir / "nodes" / "demo-registry1" / "ssh_host_ed25519_key.pub").read_text().split()
    assert known[0].split()[1:] == pub[:2]
    hosts = (idir / "hosts").read_text()
    assert "10.77.0.10\tdemo-api.demo.plex.internal demo-api\n" in hosts
    assert ("10.77.0.21\tdemo-server1.demo.plex.internal demo-server1 demo-master\n") in hosts
    assert "registry.demo.plex.internal" in hosts


# --- growing and rotating


def test_adding_a_node_within_capacity_changes_nothing(idir: Path, home: Path, cli: Cli) -> None:
    before = snapshot(idir)
    set_count(home, "agent", 3)
    assert cli("identity", "demo").code == 0
    assert changed(before, snapshot(idir)) == set()


def set_capacity(home: Path, role: str, capacity: int) -> None:
    path = home / "plexes" / "demo.yaml"
    data = yaml.safe_load(path.read_text())
    data["roles"][role]["capacity"] = capacity
    path.write_text(yaml.safe_dump(data))


def test_adding_a_node_beyond_capacity_adds_only_its_keys(idir: Path, home: Path, cli: Cli) -> None:
    before = snapshot(idir)
    set_capacity(home, "agent", 5)
    assert cli("identity", "demo").code == 0
    after = snapshot(idir)
    diff = changed(before, after)
    assert diff == {"nodes/demo-agent5", *key_files("demo-agent5"), "hosts", "ssh_known_hosts"}
    # The derived files grew by exactly the new node's lines.
    new_hosts = lines_of(after, "hosts") - lines_of(before, "hosts")
    assert new_hosts == {"10.77.0.35\tdemo-agent5.demo.plex.internal demo-agent5"}
    new_known = lines_of(after, "ssh_known_hosts") - lines_of(before, "ssh_known_hosts")
    assert len(new_known) == 2
    assert all(line.startswith("demo-agent5,") for line in new_known)


def test_removing_and_re_adding_a_node_keeps_its_keys(idir: Path, home: Path, cli: Cli) -> None:
    keys = {f: (idir / f).read_bytes() for f in key_files("demo-agent2")}
    set_count(home, "agent", 1)
    assert cli("identity", "demo").code == 0
    set_count(home, "agent", 2)
    assert cli("identity", "demo").code == 0
    assert {f: (idir / f).read_bytes() for f in key_files("demo-agent2")} == keys


@pytest.mark.parametrize(
    ("arg", "node"), [("demo-lb1", "demo-lb1"), ("lb1", "demo-lb1"), ("master", "demo-server1")]
)
def test_rotating_a_node_changes_only_its_keys(idir: Path, cli: Cli, arg: str, node: str) -> None:
    before = snapshot(idir)
    assert cli("identity", "demo", "--rotate", arg).code == 0
    after = snapshot(idir)
    assert changed(before, after) == {*key_files(node), "ssh_known_hosts"}
    # Both key types were replaced, not just rewritten.
    for f in key_files(node):
        assert after[f][1] != before[f][1]


def test_rotate_all_changes_every_key_and_both_secrets(idir: Path, cli: Cli) -> None:
    before = snapshot(idir)
    secrets_before = json.loads((idir / "secrets.json").read_text())
    assert cli("identity", "demo", "--rotate", "all").code == 0
    after = snapshot(idir)
    all_keys = set().union(*(key_files(n) for n in DEMO_NODES))
    assert changed(before, after) == {
        *all_keys,
        "secrets.json",
        "ssh_known_hosts",
        "deploy_key",
        "deploy_key.pub",
    }
    secrets_after = json.loads((idir / "secrets.json").read_text())
    assert secrets_after["token"] != secrets_before["token"]
    assert secrets_after["vrrp_secret"] != secrets_before["vrrp_secret"]
    assert {oct(after[f][0]) for f in all_keys} == {"0o600"}


def test_rotating_an_unknown_node_is_a_usage_error(idir: Path, cli: Cli) -> None:
    before = snapshot(idir)
    result = cli("identity", "demo", "--rotate", "server9")
    assert result.code == 2
    assert result.err_lines[0] == "error: plex 'demo' has no node 'server9'"
    assert snapshot(idir) == before


def test_show_without_an_identity_says_how_to_make_one(
    state_dir: Path, home: Path, cli: Cli
) -> None:
    result = cli("identity", "show", "demo")
    assert result.code == 2
    assert result.err_lines == [
        "error: plex 'demo' has no identity yet",
        "  hint: run: plex identity demo",
    ]
    assert not state_dir.exists()


def test_a_damaged_identity_is_reported_not_replaced(idir: Path, cli: Cli) -> None:
    (idir / "secrets.json").write_text("{not json")
    before = snapshot(idir)
    result = cli("identity", "demo")
    assert result.code == 1
    assert result.err_lines[0].startswith(f"error: {idir}: identity is damaged")
    assert snapshot(idir) == before


# --- the pure part, with a recording fake of the KeyGen protocol


class CountingKeyGen:
    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.secrets = 0

    def host_key(self, kind: str, comment: str) -> HostKey:
        self.keys.append((kind, comment))
        n = len(self.keys)
        return HostKey(kind, f"PRIVATE {n}\n", f"ssh-{kind} AAAA{n:04d} {comment}")

    def secret(self, length: int, alphabet: str) -> str:
        self.secrets += 1
        return alphabet[self.secrets % len(alphabet)] * length


def test_compute_identity_generates_only_what_is_missing() -> None:
    demo = load_plex(DEMO_YAML)
    gen = CountingKeyGen()
    first = compute_identity(demo, None, gen)
    kube = [n for n in DEMO_NODES if "-server" in n or "-agent" in n]
    # The join token, the VRRP secret and one node password per kube node; host keys, then
    # the plex's deploy key (last).
    assert len(gen.keys) == 2 * len(DEMO_NODES) + 1 and gen.secrets == 2 + len(kube)
    assert gen.keys[-1] == ("ed25519", "plex@demo")
    assert ("rsa", "root@demo-agent2") in gen.keys

    again = CountingKeyGen()
    assert compute_identity(demo, first, again) == first
    assert again.keys == [] and again.secrets == 0

    rotated = compute_identity(demo, first, again, rotate=["demo-lb2"])
    assert again.keys == [("ed25519", "root@demo-lb2"), ("rsa", "root@demo-lb2")]
    assert rotated.token == first.token
    assert {n for n in first.keys if rotated.keys[n] != first.keys[n]} == {"demo-lb2"}


def test_compute_identity_rejects_an_unknown_rotation() -> None:
    from plex.errors import UsageError

    with pytest.raises(UsageError, match="cannot rotate 'demo-lb9'"):
        compute_identity(load_plex(DEMO_YAML), None, CountingKeyGen(), rotate=["demo-lb9"])


def test_hosts_file_without_vip_points_the_api_name_at_the_master() -> None:
    plex = parse_plex(
        "name: solo\nincus: {project: p}\nnetwork: {cidr: 10.1.0.0/24}\n"
        "roles:\n  server: {count: 1, offset: 7}\n"
    )
    assert "10.1.0.7\tsolo-api.plex.internal solo-api\n" in ident.hosts_file(plex)


def test_node_passwords_are_like_rke2s_and_stable(idir: Path, cli: Cli) -> None:
    """k3s ensureNodePassword: 16 random bytes in hex; one per kube node, kept across runs."""
    pw = (idir / "nodes/demo-agent1/node-password").read_text()
    assert len(pw.strip()) == 32 and set(pw.strip()) <= set("0123456789abcdef")
    assert not (idir / "nodes/demo-lb1/node-password").exists()
    assert cli("identity", "demo").code == 0
    assert (idir / "nodes/demo-agent1/node-password").read_text() == pw


def test_private_files_of_a_node_are_what_deploy_pushes() -> None:
    plex = load_plex(DEMO_YAML)
    identity = compute_identity(plex, None, CountingKeyGen())
    agent = {f.path: f for f in identity.private_files("demo-agent1", Role.AGENT)}
    assert agent[ident.NODE_PASSWORD_PATH].mode == 0o600
    assert (
        agent[ident.NODE_PASSWORD_PATH].data
        == (identity.node_passwords["demo-agent1"] + "\n").encode()
    )
    assert agent["/etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert agent["/etc/ssh/ssh_host_ed25519_key.pub"].mode == 0o644
    lb = {f.path for f in identity.private_files("demo-lb1", Role.LB)}
    assert ident.NODE_PASSWORD_PATH not in lb
    again = compute_identity(plex, identity, CountingKeyGen(), rotate=["demo-agent2"])
    assert again.node_passwords["demo-agent1"] == identity.node_passwords["demo-agent1"]
    assert again.node_passwords["demo-agent2"] != identity.node_passwords["demo-agent2"]
