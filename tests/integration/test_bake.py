"""Bake every role of the demo plex on real Incus and check what the images hold."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.backends.incus.protocol import Incus
from plex.model import owner
from plex.model.identity import TOKEN_FILE, VRRP_AUTH_FILE, hosts_file, known_hosts_file
from plex.model.image import digest_alias, image_alias
from plex.model.plex import Plex, Role
from plex.services.bake import Baker, Paths
from plex.services.push import push_checked
from plex.store.catalog import load_catalog
from plex.store.identity import require_identity

from .conftest import ROOT, alias_target, with_agent_offset

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from plex.services.bake import BakeResult

pytestmark = pytest.mark.incus

EXPECTED = {
    "lb": (
        ["/etc/haproxy/haproxy.cfg", "/etc/keepalived/check_apiserver.sh"],
        ["haproxy", "keepalived", "ssh", "plex-node", "systemd-networkd"],
    ),
    "server": (
        [
            "/usr/local/bin/rke2",
            "/etc/rancher/rke2/config.yaml",
            "/etc/rancher/rke2/registries.yaml",
        ],
        ["rke2-server", "ssh", "plex-node"],
    ),
    "agent": (
        [
            "/usr/local/bin/rke2",
            "/etc/rancher/rke2/config.yaml",
            "/etc/rancher/rke2/registries.yaml",
        ],
        ["rke2-agent", "ssh", "plex-node"],
    ),
    "registry": (
        ["/etc/docker/registry/docker.io.yml", "/etc/systemd/system/plex-registry@.service"],
        ["plex-registry.target", "ssh", "plex-node"],
    ),
}


def launch(incus: PylxdIncus, plex: Plex, role: str, name: str) -> None:
    incus.create_instance(
        name,
        image=image_alias(plex.name, role),
        profiles=[],
        config={owner.PLEX: "bake-test-probe"},
        devices={
            "root": {"type": "disk", "path": "/", "pool": plex.incus.pool},
            "eth0": {"type": "nic", "nictype": "p2p", "name": "eth0"},
        },
    )
    incus.start(name)


def sh(incus: Incus, name: str, cmd: str) -> str:
    res = incus.exec(name, ["/bin/sh", "-c", cmd])
    assert res.returncode == 0, f"{cmd}: {res.output}"
    return res.stdout


@pytest.mark.parametrize("role", ["lb", "server", "agent", "registry"])
def test_role_image_has_files_and_enabled_services(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult], role: str
) -> None:
    assert role in baked
    files, services = EXPECTED[role]
    name = f"probe-{role}"
    launch(incus, test_plex, role, name)
    try:
        identity = require_identity(test_plex)
        assert incus.pull_file(name, "/etc/hosts").decode() == hosts_file(test_plex)
        assert incus.pull_file(name, "/etc/ssh/ssh_known_hosts").decode() == known_hosts_file(
            test_plex, identity
        )
        for f in files:
            sh(incus, name, f"test -s {f}")
        for s in services:
            assert sh(incus, name, f"systemctl --root=/ is-enabled {s}").strip() == "enabled", s
        # No host key of any kind in the image: the node's own are pushed at deploy.
        keys = sh(incus, name, "ls /etc/ssh/ | grep -c '^ssh_host_.*_key$' || true")
        assert keys.strip() == "0"
        if role == "lb":
            sh(incus, name, "haproxy -c -f /etc/haproxy/haproxy.cfg")
            # No VRRP password in the image: keepalived refuses the config until deploy has
            # pushed the node's auth file, then accepts it.
            assert incus.exec(name, ["test", "-e", VRRP_AUTH_FILE]).returncode == 1
            conf1 = "/etc/plex/nodes/demo-lb1/etc/keepalived/keepalived.conf"
            assert incus.exec(name, ["keepalived", "-t", "-f", conf1]).returncode != 0
            for pf in identity.private_files("demo-lb1", Role.LB):
                if pf.path == VRRP_AUTH_FILE:
                    push_checked(incus, name, pf.path, pf.data, pf.mode)
            for n in ("demo-lb1", "demo-lb2"):
                conf = f"/etc/plex/nodes/{n}/etc/keepalived/keepalived.conf"
                sh(incus, name, f"keepalived -t -f {conf}")
            # Per-node files are there for every lb, and 0600 where the recipe says so.
            conf = "/etc/plex/nodes/demo-lb2/etc/keepalived/keepalived.conf"
            mode = sh(incus, name, f"stat -c %a {conf}")
            assert mode.strip() == "600"
        if role in ("server", "agent"):
            assert "stand-in" in sh(incus, name, "/usr/local/bin/rke2 --version")
            cfg = yaml.safe_load(incus.pull_file(name, "/etc/rancher/rke2/config.yaml"))
            # The join token is not in the image: deploy pushes it as its own drop-in.
            assert "token" not in cfg
            assert incus.exec(name, ["test", "-e", TOKEN_FILE]).returncode == 1
            assert incus.exec(name, ["grep", "-rqF", identity.token, "/etc"]).returncode == 1
    finally:
        incus.delete_instance(name)


def test_unchanged_recipe_is_a_cached_noop_under_a_second(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult]
) -> None:
    baker = Baker(test_plex, incus, Paths.under(ROOT))
    start = time.monotonic()
    results = baker.bake(list(Role))
    elapsed = time.monotonic() - start
    assert all(r.cached for r in results), [r.to_json() for r in results]
    assert [r.digest for r in results] == [baked[r.role.value].digest for r in results]
    assert elapsed < 1.0, f"no-op bake took {elapsed:.2f}s"


def test_address_change_rebuilds_only_plex_layers(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult]
) -> None:
    moved = with_agent_offset(test_plex, 41)
    layers_before = {p.name: p.stat().st_mtime for p in _layer_dir().glob("*.tar")}
    pkg_images_before = {
        i.fingerprint for i in incus.images() if any(a.startswith("plex-pkg/") for a in i.aliases)
    }
    results = Baker(moved, incus, Paths.under(ROOT)).bake(list(Role))
    for r in results:
        assert not r.cached, f"{r.role}: hosts changed, the plex layer must rebuild"
        assert r.package_cached, f"{r.role}: the package layer must be reused"
        assert r.digest != baked[r.role.value].digest
    assert {p.name: p.stat().st_mtime for p in _layer_dir().glob("*.tar")} == layers_before
    assert {
        i.fingerprint for i in incus.images() if any(a.startswith("plex-pkg/") for a in i.aliases)
    } == pkg_images_before
    # Back to the original data: a cache hit, and the moving aliases move back.
    back = Baker(test_plex, incus, Paths.under(ROOT)).bake(list(Role))
    assert all(r.cached for r in back)
    for r in back:
        assert (
            alias_target(incus, image_alias(test_plex.name, r.role))
            == baked[r.role.value].fingerprint
        )


def _layer_dir() -> Path:
    from plex.store.state import cache_root

    return cache_root() / "layers"


def _bake_process(plex: Plex, tmp_path: Path) -> subprocess.Popen[bytes]:
    f = tmp_path / "killed.yaml"
    f.write_text(yaml.safe_dump(plex.model_dump(mode="json", exclude={"source"})))
    env = {**os.environ, "PLEX_HOME": str(ROOT), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "plex", "bake", str(f), "--type", "lb"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_build_instance(incus: Incus, plex_name: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        builds = incus.observe_builds(plex_name)
        if builds:
            return builds[0].name
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.2)
    raise AssertionError("no build instance appeared")


def test_sigkill_mid_bake_leaves_previous_image_and_next_bake_cleans_up(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult], tmp_path: Path
) -> None:
    changed = with_agent_offset(test_plex, 51)  # a change, so the lb plex layer must rebuild
    before = load_catalog(test_plex.name)
    proc = _bake_process(changed, tmp_path)
    leftover = _wait_for_build_instance(incus, test_plex.name, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert leftover in incus.instance_names()  # SIGKILL: nothing could clean up
    # The catalog and the aliases still point at the previous good image.
    assert load_catalog(test_plex.name) == before
    lb = baked["lb"]
    assert alias_target(incus, image_alias(test_plex.name, "lb")) == lb.fingerprint
    assert incus.image_by_alias(digest_alias(test_plex.name, "lb", lb.digest)) is not None
    # The next bake removes the leftover first.
    results = Baker(test_plex, incus, Paths.under(ROOT)).bake([Role.LB])
    assert results[0].cached
    assert leftover not in incus.instance_names()
    assert incus.observe_builds(test_plex.name) == []


def test_sigterm_mid_bake_cleans_up_and_publishes_nothing(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult], tmp_path: Path
) -> None:
    changed = with_agent_offset(test_plex, 52)
    images_before = {i.fingerprint for i in incus.images()}
    proc = _bake_process(changed, tmp_path)
    _wait_for_build_instance(incus, test_plex.name, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    assert incus.observe_builds(test_plex.name) == []
    assert {i.fingerprint for i in incus.images()} == images_before
    assert alias_target(incus, image_alias(test_plex.name, "lb")) == baked["lb"].fingerprint


BUILD_HOST_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/machine-id")


def _apt_proxies(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(r"Acquire::[a-z]+::Proxy", ln, re.I)]


def test_no_image_carries_build_host_files(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult]
) -> None:
    """resolv.conf, hosts, machine-id and the apt proxy come from the plex or are empty, never
    from the build host (mmdebstrap copies the host's resolv.conf into a rootfs)."""
    host_apt = subprocess.run(
        ["apt-config", "dump"], capture_output=True, text=True, check=False
    ).stdout
    for role in baked:
        name = f"hostfiles-{role}"
        incus.create_instance(
            name,
            image=image_alias(test_plex.name, role),
            profiles=[],
            config={owner.PLEX: "bake-test-probe"},
            devices={
                "root": {"type": "disk", "path": "/", "pool": test_plex.incus.pool},
                "eth0": {"type": "nic", "nictype": "p2p", "name": "eth0"},
            },
        )
        try:
            # Read before the first boot: systemd fills an empty machine-id at boot.
            for path in BUILD_HOST_FILES:
                host = Path(path).read_bytes() if Path(path).exists() else None
                assert incus.pull_file(name, path) != host, f"{role}: {path} is the build host's"
            resolv = incus.pull_file(name, "/etc/resolv.conf").decode()
            want = [f"nameserver {d}" for d in test_plex.network.dns]
            assert [ln for ln in resolv.splitlines() if ln.startswith("nameserver")] == want
            assert incus.pull_file(name, "/etc/machine-id") == b""
            incus.start(name)
            image_apt = sh(incus, name, "apt-config dump")
            assert _apt_proxies(image_apt) == [], f"{role}: apt proxy in the image"
            if _apt_proxies(host_apt):
                assert _apt_proxies(image_apt) != _apt_proxies(host_apt)
            hostname = sh(incus, name, "cat /etc/hostname").strip()
            assert hostname == name, f"{role}: /etc/hostname is {hostname!r}"
        finally:
            incus.delete_instance(name)
