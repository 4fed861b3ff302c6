"""kubernetes.airgap on real Incus: with the plex registry STOPPED and no upstream resolvable,
a server baked with the stand-in release's own airgap tarball becomes ready (the stand-in
imports agent/images/*.tar.zst at start, as RKE2 does); baked without it, it does not (the
runtime image pull through registries.yaml never succeeds)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.errors import ProbeError
from plex.model import topology
from plex.model.image import image_alias
from plex.model.plex import Plex, Role
from plex.services import registry as ops
from plex.services.bake import Baker, Paths
from plex.services.deploy import apply_plan, make_deploy_plan
from plex.services.destroy import destroy

from .conftest import ROOT, demo_plex, shipped_plex

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from tests.fixtures.release_server import ReleaseServer
    from tests.fixtures.simulated_internet import SimulatedInternet

pytestmark = pytest.mark.incus
IMAGES = "/var/lib/rancher/rke2/agent/images/rke2-images.linux-amd64.tar.zst"


def _plex(base: Plex, airgap: bool) -> Plex:
    """The shipped demo plex (its upstream is the default endpoint https://registry-1.docker.io,
    so nothing else is left to pull from once that name does not resolve) cut to a registry
    and one server, airgap on or off."""
    data = base.model_dump(mode="json", exclude={"source"})
    overrides = {
        "kubernetes.airgap": airgap,
        "kubernetes.release_url": data["kubernetes"]["release_url"],
        "tls.ca_files": data["tls"]["ca_files"],
        "roles.agent.count": 0,
        "roles.lb.count": 0,
        "network.vip": None,
        "roles.server.count": 1,
    }
    if "config" in data["roles"]["server"]:
        overrides["roles.server.config"] = data["roles"]["server"]["config"]
    plex = demo_plex(base.incus.project, **overrides)
    assert [u.url for u in plex.registry.upstreams] == ["https://registry-1.docker.io"]
    return plex


@pytest.fixture(scope="module")
def shipped(
    session_project: str,
    standin_release: ReleaseServer,
    internet: SimulatedInternet,
    state_dirs: Path,
) -> Plex:
    return shipped_plex(session_project, standin_release.url, internet.ca.cert)


@pytest.fixture(scope="module")
def quick_probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real deploy/ directory with the server probes' timeouts cut to 90s, so the
    'does not become ready' case fails in minutes, not the 300s a real first start gets."""
    root = tmp_path_factory.mktemp("quick-root")
    shutil.copytree(ROOT / "deploy", root / "deploy")
    probes = yaml.safe_load((root / "deploy" / "probes.yaml").read_text())
    for p in probes["roles"]["server"]:
        p["timeout"] = 90
    (root / "deploy" / "probes.yaml").write_text(yaml.safe_dump(probes, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def aliases(incus: PylxdIncus) -> Iterator[None]:
    """This module bakes other generations of demo/<role>: put the session's back after."""
    saved = {r: incus.image_by_alias(image_alias("demo", r)) for r in Role}
    yield
    for role, img in saved.items():
        if img is not None:
            incus.set_alias(image_alias("demo", role), img.fingerprint)


def _start_server_with_the_registry_stopped(
    incus: PylxdIncus, plex: Plex, root: Path, internet: SimulatedInternet
) -> None:
    destroy(plex, incus, everything=True)
    Baker(plex, incus, Paths.under(ROOT)).bake([Role.REGISTRY, Role.SERVER])
    ops.up_incus(plex, incus, ROOT)
    reg = topology.registry_node(plex)
    assert reg is not None
    incus.stop(reg.name, force=True)
    plan, _ = make_deploy_plan(plex, incus)
    # Only the server: the stopped registry stays stopped (a deploy would replace it).
    waves = tuple(w for w in plan.waves if all(a.node != reg.name for a in w))
    assert [a.node for w in waves for a in w] == [topology.master(plex).name]
    with internet.unresolvable():  # no upstream either: the default endpoint is gone too
        apply_plan(plex, incus, dataclasses.replace(plan, waves=waves), root)


def test_airgap_server_becomes_ready_without_registry_or_upstream(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, quick_probes: Path, aliases: None
) -> None:
    plex = _plex(shipped, airgap=True)
    try:
        _start_server_with_the_registry_stopped(incus, plex, quick_probes, internet)
        master = topology.master(plex).name
        assert incus.exec(master, ["test", "-s", IMAGES]).returncode == 0
        log = incus.exec(
            master,
            [
                "sh",
                "-c",
                "journalctl -u rke2-server -o cat --no-pager | grep -i 'runtime image\\|importing'",
            ],
        )
        assert "Importing images from" in log.stdout, log.stdout
        assert "airgap" in log.stdout, log.stdout
    finally:
        destroy(plex, incus, everything=True)


def test_without_airgap_the_server_never_becomes_ready(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, quick_probes: Path, aliases: None
) -> None:
    plex = _plex(shipped, airgap=False)
    try:
        with pytest.raises(ProbeError) as e:
            _start_server_with_the_registry_stopped(incus, plex, quick_probes, internet)
        master = topology.master(plex).name
        assert master in e.value.message
        assert incus.exec(master, ["test", "-e", IMAGES]).returncode != 0
        log = incus.exec(
            master,
            [
                "sh",
                "-c",
                "journalctl -u rke2-server -o cat --no-pager | grep 'Failed to pull runtime image'",
            ],
        )
        assert log.stdout.strip(), "the stand-in did not try to pull"
    finally:
        destroy(plex, incus, everything=True)
