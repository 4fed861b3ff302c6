"""Real-Incus fixtures: each test session works in its own Incus project and removes it.

When CI=true an unusable Incus FAILS the tests instead of skipping them: a skipped integration
test is not a passed one.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.errors import BackendError
from plex.model.plex import IncusConfig, Plex
from plex.plexfile.load import parse_plex

if TYPE_CHECKING:  # imported where used: only the fixtures a test asks for load them
    from plex.backends.incus.client import PylxdIncus
    from plex.services.bake import BakeResult
    from tests.fixtures.release_server import ReleaseServer
    from tests.fixtures.simulated_internet import SimulatedInternet
    from tests.fixtures.upstream_registry import Upstream

ROOT = Path(__file__).resolve().parents[2]
POOL = os.environ.get("PLEX_TEST_POOL", "plex")
NETWORK = os.environ.get("PLEX_TEST_NETWORK", "plexbr0")


def _unusable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Incus is required in CI but unusable: {why}", pytrace=False)
    pytest.skip(f"Incus unusable here: {why} (run bin/setup-incus)")


@pytest.fixture(scope="session")
def session_project() -> str:
    return f"plex-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def incus_cfg(session_project: str) -> IncusConfig:
    return IncusConfig(project=session_project, pool=POOL, network=NETWORK)


@pytest.fixture(scope="session")
def incus(incus_cfg: IncusConfig) -> Iterator[PylxdIncus]:
    from plex.backends.incus.client import connect
    from tests.fixtures.throwaway_projects import claim, release

    try:
        # Before this session's plexes: a killed session's project still holds their names
        # and addresses on the bridge (tests/fixtures/throwaway_projects.py).
        reaped = claim(incus_cfg, incus_cfg.project)
        inc: PylxdIncus = connect(incus_cfg)
        inc.sync("GET", f"storage-pools/{POOL}", project=False, what=f"pool {POOL}")
    except BackendError as e:
        _unusable(e.message)
    if reaped:
        # In the warnings summary: a machine that keeps leaving projects behind is worth a look.
        warnings.warn(f"deleted the projects of killed sessions: {', '.join(reaped)}", stacklevel=1)
    try:
        yield inc
    finally:
        inc.delete_project()
        release(incus_cfg.project)


@pytest.fixture(scope="session")
def state_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Identity/catalog state per session; the download + layer cache is shared across runs
    (PLEX_CACHE_DIR, set by .ci/run) so package layers are built once per machine."""
    state = tmp_path_factory.mktemp("plex-state")
    old = os.environ.get("PLEX_STATE_DIR")
    os.environ["PLEX_STATE_DIR"] = str(state)
    os.environ.setdefault("PLEX_CACHE_DIR", "/var/cache/plex-test")
    yield state
    if old is None:
        os.environ.pop("PLEX_STATE_DIR", None)
    else:
        os.environ["PLEX_STATE_DIR"] = old


def demo_plex(project: str, **overrides: object) -> Plex:
    """plexes/demo.yaml in the test session's project (same nodes, addresses, network)."""
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["incus"]["project"] = project
    data["incus"]["pool"] = POOL
    data["incus"]["network"] = NETWORK
    # Follow the test bridge's subnet (same host numbers as the demo), so test runs on
    # different bridges (PLEX_TEST_NETWORK) never share addresses.
    import ipaddress

    gw = bridge_address(NETWORK)
    net = ipaddress.ip_network(f"{gw}/24", strict=False)
    data["network"].update(
        {"cidr": str(net), "gateway": gw, "dns": [gw], "vip": str(net.network_address + 10)}
    )
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return parse_plex(yaml.safe_dump(data), f"demo.yaml (project {project})")


@pytest.fixture(scope="session")
def standin_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseServer]:
    """The STAND-IN RKE2 release (tests/fixtures/standin_rke2), served over local HTTP in
    place of GitHub's release downloads: the bake fetches and verifies it like the real one."""
    from tests.fixtures.build_standin import build_standin_rke2
    from tests.fixtures.release_server import serve_directory

    root = tmp_path_factory.mktemp("standin-rke2-release")
    build_standin_rke2(root)
    with serve_directory(root) as server:
        yield server


def bridge_address(network: str = NETWORK) -> str:
    """The host's address on the plex bridge (the gateway the nodes see)."""
    import subprocess

    out = subprocess.run(
        ["incus", "network", "get", network, "ipv4.address"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return out.split("/")[0]


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A local upstream registry standing in for docker.io (no internet here), on the host's
    bridge address so the plex's registry node can reach it."""
    from tests.fixtures.upstream_registry import start_upstream

    up = start_upstream(tmp_path_factory.mktemp("upstream"), bridge_address(), 5599)
    yield up
    up.stop()


@pytest.fixture(scope="session")
def test_plex(session_project: str, standin_release: ReleaseServer, upstream: Upstream) -> Plex:
    """The demo plex, in the session project, fetching RKE2 from the stand-in release and
    caching docker.io from the local stand-in upstream."""
    overrides: dict[str, object] = {
        "kubernetes.release_url": standin_release.url,
        "registry.upstreams": [{"name": "docker.io", "url": upstream.url}],
        # The CI store (test_registry_store.py) on the registry node every module deploys.
        "registry.store.enabled": True,
    }
    if not can_load_modules():
        # linux.kernel_modules makes Incus modprobe at start; this sandbox's kernel has no
        # loadable modules (and no modprobe), so kube containers could not start at all.
        for role in ("server", "agent"):
            overrides[f"roles.{role}.config"] = {"linux.kernel_modules": ""}
    return demo_plex(session_project, **overrides)


def can_load_modules() -> bool:
    import platform
    import shutil

    return bool(shutil.which("modprobe")) and Path(f"/lib/modules/{platform.release()}").is_dir()


@pytest.fixture(scope="session")
def baked(test_plex: Plex, incus: PylxdIncus, state_dirs: Path) -> dict[str, BakeResult]:
    """Every role of the demo plex baked once for the session (package layers are cached on
    the machine across runs; plex layers are built fresh in the session project)."""
    from plex.services.bake import Baker, Paths

    baker = Baker(test_plex, incus, Paths.under(ROOT))
    roles = [r for r, rc in test_plex.roles.items() if rc.count]
    results = baker.bake(roles)
    return {r.role.value: r for r in results}


def alias_target(incus: PylxdIncus, alias: str) -> str | None:
    """The fingerprint of the image `alias` names (None: no such alias or image)."""
    img = incus.image_by_alias(alias)
    return img.fingerprint if img is not None else None


def with_agent_offset(plex: Plex, offset: int) -> Plex:
    """The same plex with its agents moved to another host range (a plex-data change)."""
    data = plex.model_dump(mode="json", exclude={"source"})
    data["roles"]["agent"]["offset"] = offset
    return parse_plex(yaml.safe_dump(data), "moved-agent.yaml")


@pytest.fixture(scope="session")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedInternet]:
    """The simulated internet (tests/fixtures/simulated_internet.py): a namespace of this run
    serving the stand-in upstream registry as https://registry-1.docker.io and ghcr.io with a
    test CA's certificate, answered by the test bridge's DNS. Removed at the end of the run."""
    from tests.fixtures.simulated_internet import start_simulated_internet

    net = start_simulated_internet(tmp_path_factory.mktemp("internet"), NETWORK)
    try:
        yield net
    finally:
        net.stop()


def shipped_plex(project: str, release_url: str, ca_file: Path) -> Plex:
    """plexes/demo.yaml AS SHIPPED: its upstream (https://registry-1.docker.io), node names,
    roles and addressing mode. What the harness changes is only what this machine needs: the
    Incus project/pool/bridge and the addresses on it (demo_plex), where the bake downloads
    RKE2 from (the stand-in release: a host-side download, not a node's), the kernel-module
    quirk of this sandbox, and the one addition a user makes too: the test CA in tls.ca_files."""
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    overrides: dict[str, object] = {
        "kubernetes.release_url": release_url,
        "tls.ca_files": [str(ca_file)],
    }
    if not can_load_modules():
        for role in ("server", "agent"):
            overrides[f"roles.{role}.config"] = {"linux.kernel_modules": ""}
    plex = demo_plex(project, **overrides)
    assert plex.registry.upstreams == parse_plex(yaml.safe_dump(data)).registry.upstreams
    return plex
