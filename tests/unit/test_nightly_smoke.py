"""Smoke checks, the pure parts: image references, the smoke image setting, registry URLs, the
"nodes run the baked images" check, and the pull probe against a recording executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from plex.backends.incus.protocol import ExecResult
from plex.deploy.probes import run_probe
from plex.errors import ConfigErrors, ProbeError
from plex.model import topology
from plex.model.plex import Engine, NightlyConfig, Plex, Role
from plex.plexfile.load import load_plex
from plex.services.smoke import (
    ImageRef,
    check_images,
    manifest_url,
    parse_image,
    pull_node,
    pull_probe,
    smoke_image,
)
from tests.fixtures.fake_incus import FakeIncus, replies

PLEXES = Path(__file__).resolve().parents[2] / "plexes"


@pytest.fixture(scope="module")
def demo() -> Plex:
    return load_plex(PLEXES / "demo.yaml")


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("busybox", ImageRef("docker.io", "library/busybox", "latest")),
        ("busybox:1.36", ImageRef("docker.io", "library/busybox", "1.36")),
        ("docker.io/library/plextest:1.0", ImageRef("docker.io", "library/plextest", "1.0")),
        ("docker.io/busybox:1", ImageRef("docker.io", "library/busybox", "1")),
        ("rancher/rke2-runtime:v1", ImageRef("docker.io", "rancher/rke2-runtime", "v1")),
        ("ghcr.io/org/app:2", ImageRef("ghcr.io", "org/app", "2")),
        (
            "registry.k8s.io/pause@sha256:" + "0" * 64,
            ImageRef("registry.k8s.io", "pause", "sha256:" + "0" * 64),
        ),
        ("localhost:5000/x/y", ImageRef("localhost:5000", "x/y", "latest")),
    ],
)
def test_parse_image_normalises_like_docker(ref: str, want: ImageRef) -> None:
    assert parse_image(ref) == want


@pytest.mark.parametrize("bad", ["", "has space", "Upper/Case:1", "docker.io/"])
def test_parse_image_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match="not an image reference"):
        parse_image(bad)


def test_smoke_image_must_come_from_an_upstream_and_errors_name_the_field(demo: Plex) -> None:
    assert smoke_image(demo).full == "docker.io/library/busybox:1.36"  # the default
    quay = demo.model_copy(update={"nightly": NightlyConfig(smoke_image="quay.io/x/y:1")})
    with pytest.raises(ConfigErrors) as e:
        smoke_image(quay)
    assert "nightly.smoke_image" in e.value.message
    assert "not one of registry.upstreams (docker.io)" in e.value.message
    bad = demo.model_copy(update={"nightly": NightlyConfig(smoke_image="no way")})
    with pytest.raises(ConfigErrors, match=r"nightly\.smoke_image"):
        smoke_image(bad)


def test_manifest_url_follows_the_engine_layout(demo: Plex) -> None:
    ref = parse_image("docker.io/library/plextest:1.0")
    # distribution: one port per upstream (from registry.port up), /v2 at the root.
    assert manifest_url(demo, ref) == "http://10.77.0.5:5000/v2/library/plextest/manifests/1.0"
    zot = demo.model_copy(
        update={"registry": demo.registry.model_copy(update={"engine": Engine.ZOT})}
    )
    # zot: one port, the upstream's prefix replaces /v2 (override_path).
    assert (
        manifest_url(zot, ref)
        == "http://10.77.0.5:5000/v2/docker.io/library/plextest/manifests/1.0"
    )


def test_check_images_names_every_stale_or_missing_node(demo: Plex) -> None:
    expected = {
        Role.REGISTRY: "r" * 64,
        Role.LB: "l" * 64,
        Role.SERVER: "s" * 64,
        Role.AGENT: "a" * 64,
    }
    running = {n.name: expected[n.role] for n in topology.nodes(demo)}
    assert check_images(demo, running, expected).ok
    running["demo-agent2"] = "o" * 64
    del running["demo-lb1"]
    with pytest.raises(ProbeError) as e:
        check_images(demo, running, expected)
    assert "2 node(s)" in e.value.message
    assert "demo-agent2 runs oooooooooooo, not aaaaaaaaaaaa" in e.value.message
    assert "demo-lb1 runs nothing" in e.value.message


def agent(name: str, pull_works: bool) -> FakeIncus:
    """A running agent whose `ctr images pull` reaches the registry or not."""
    miss = ExecResult(
        1,
        "ctr: failed to resolve reference: dial tcp: lookup registry-1.docker.io: no such host",
        "",
    )
    fake = FakeIncus(
        on_exec=replies(
            ExecResult(0, "docker.io/library/plextest:1.0\n", "") if pull_works else miss
        )
    )
    fake.add_instance(name)
    return fake


def test_pull_probe_uses_the_nodes_own_hosts_dir_and_the_rke2_socket(demo: Plex) -> None:
    node = pull_node(demo)
    assert node.name == "demo-agent1"  # pods run on agents
    probe = pull_probe(demo, parse_image("docker.io/library/plextest:1.0"), timeout=0)
    ok = agent(node.name, pull_works=True)
    assert run_probe(ok, node.name, node.name, probe).ok
    [(_, target, _, argv)] = [c for c in ok.calls if c[0] == "exec"]
    assert target == node.name
    cmd = argv[-1]
    assert "--address /run/k3s/containerd/containerd.sock -n k8s.io" in cmd
    # The hosts RKE2 generated from registries.yaml, as the kubelet's pulls use them.
    certs_d = "/var/lib/rancher/rke2/agent/etc/containerd/certs.d"
    assert f"images pull --hosts-dir {certs_d} docker.io/library/plextest:1.0" in cmd
    assert "/var/lib/rancher/rke2/bin" in cmd  # where RKE2 keeps ctr
    broken = agent(node.name, pull_works=False)
    with pytest.raises(ProbeError, match="no such host"):
        run_probe(broken, node.name, node.name, probe, sleep=lambda s: None)
