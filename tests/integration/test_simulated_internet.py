"""The shipped demo plex on a simulated internet: plexes/demo.yaml as shipped (upstream
https://registry-1.docker.io) plus only the test CA is baked, deployed and smoke-checked, with
name resolution in the nodes, routing through the host, TLS verification and the pull-through
cache all on the path, as on a real host (tests/fixtures/simulated_internet.py).

Then each link of that path is broken in turn (the name does not resolve, the upstream is
unreachable, its certificate is not trusted), and the probe, `plex registry stats` and the
smoke check each say so in one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.backends.incus.client import PylxdIncus
from plex.backends.incus.protocol import ExecResult
from plex.deploy.probes import ProbeResult, load_probes, run_probe, upstream_probes
from plex.errors import ProbeError
from plex.model import topology
from plex.model.image import image_alias
from plex.model.plex import Plex, Role
from plex.services.bake import Baker, Paths
from plex.services.deploy import deploy, make_deploy_plan
from plex.services.destroy import destroy
from plex.services.smoke import smoke
from plex.store.identity import require_identity

from .conftest import ROOT, shipped_plex

if TYPE_CHECKING:
    from typing import Any

    from tests.fixtures.release_server import ReleaseServer
    from tests.fixtures.simulated_internet import SimulatedInternet

pytestmark = pytest.mark.incus

PROBES = ROOT / "deploy" / "probes.yaml"


@pytest.fixture(scope="module")
def shipped(
    incus: PylxdIncus,
    session_project: str,
    standin_release: ReleaseServer,
    internet: SimulatedInternet,
    state_dirs: Path,
) -> Plex:
    return shipped_plex(session_project, standin_release.url, internet.ca.cert)


@pytest.fixture(scope="module")
def online(
    incus: PylxdIncus,
    shipped: Plex,
    internet: SimulatedInternet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, object]]:
    """The shipped plex baked and deployed from nothing (other modules' nodes of the same plex
    are removed first: same names and addresses). Their image aliases are put back after."""
    saved = {r: incus.image_by_alias(image_alias(shipped.name, r)) for r in Role}
    destroy(shipped, incus, everything=True)
    roles = [r for r, rc in shipped.roles.items() if rc.count]
    results = Baker(shipped, incus, Paths.under(ROOT)).bake(roles)
    plan, _ = deploy(shipped, incus, ROOT)
    plex_file = tmp_path_factory.mktemp("shipped") / "demo.yaml"
    plex_file.write_text(yaml.safe_dump(shipped.model_dump(mode="json", exclude={"source"})))
    try:
        yield {"digests": {r.role: r.digest for r in results}, "plan": plan, "file": plex_file}
    finally:
        destroy(shipped, incus, everything=True)
        for role, img in saved.items():
            if img is not None:
                incus.set_alias(image_alias(shipped.name, role), img.fingerprint)


def _smoke(incus: PylxdIncus, plex: Plex, digests: dict[Role, str]) -> list[ProbeResult]:
    return list(smoke(plex, incus, ROOT, digests, incus.observe(plex.name)))


def _sh(incus: PylxdIncus, node: str, cmd: str) -> ExecResult:
    return incus.exec(node, ["/bin/sh", "-c", cmd])


def test_the_shipped_demo_deploys_and_smoke_checks_through_the_simulated_internet(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    # As shipped: the real upstream name, no address of this machine in it.
    assert [u.url for u in shipped.registry.upstreams] == ["https://registry-1.docker.io"]
    assert make_deploy_plan(shipped, incus)[0].empty
    results = _smoke(incus, shipped, online["digests"])
    assert all(r.ok for r in results)
    assert any(r.probe.startswith("upstream docker.io") for r in results)
    assert any(r.probe == "pull docker.io/library/busybox:1.36" for r in results)


def test_nodes_resolve_exactly_the_simulated_names(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    reg = topology.registry_node(shipped)
    assert reg is not None
    for node in (reg.name, topology.master(shipped).name):
        for name in internet.names:
            out = _sh(incus, node, f"getent ahostsv4 {name} | head -n1").stdout.split()
            assert out[:1] == [internet.address], (node, name, out)
        # The bridge's DNS forwards nothing: any other name stays unresolved.
        assert _sh(incus, node, "getent hosts deb.debian.org").returncode != 0


def test_the_cache_went_upstream_over_tls_from_the_registry_node(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    reg = topology.registry_node(shipped)
    assert reg is not None
    log = internet.upstream.log.read_text(errors="replace")
    # Routed, not NATed: the upstream sees the registry node's own address.
    assert re.search(
        rf"^{re.escape(reg.address)} .*GET /v2/library/busybox/manifests/1\.36", log, re.M
    ), log[-2000:]
    # TLS was verified against the trust store the plex's tls.ca_files filled.
    check = _sh(
        incus, reg.name, "curl -sS -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/"
    )
    assert check.stdout.strip() == "200", check.stderr


# --- one link broken at a time ----------------------------------------------------------------


def _probe_line(incus: PylxdIncus, plex: Plex) -> str:
    reg = topology.registry_node(plex)
    assert reg is not None
    (probe,) = upstream_probes(plex, require_identity(plex), load_probes(PROBES))
    with pytest.raises(ProbeError) as e:
        run_probe(incus, reg.name, reg.name, dataclasses.replace(probe, timeout=4))
    return e.value.message


def _stats_line(plex_file: Path) -> str:
    env = {**os.environ, "PLEX_HOME": str(ROOT), "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "plex", "registry", "stats", str(plex_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 5, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def _smoke_line(incus: PylxdIncus, plex: Plex, digests: dict[Role, str]) -> str:
    with pytest.raises(ProbeError) as e:
        _smoke(incus, plex, digests)
    return e.value.message


def _all_say(incus: PylxdIncus, plex: Plex, online: dict[str, Any], expected: str) -> None:
    lines = {
        "probe": _probe_line(incus, plex),
        "stats": _stats_line(online["file"]),
        "smoke": _smoke_line(incus, plex, online["digests"]),
    }
    for where, line in lines.items():
        print(f"{where}: {line}")  # what a user sees (pytest -rP shows it)
        assert "\n" not in line, (where, line)
        assert expected in line, (where, line)
        assert "probe 'upstream docker.io'" in line, (where, line)
        assert "https://registry-1.docker.io/v2/" in line, (where, line)


def test_upstream_name_not_resolving_is_one_clear_line(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    with internet.unresolvable():
        _all_say(incus, shipped, online, "Could not resolve host: registry-1.docker.io")


def test_upstream_unreachable_is_one_clear_line(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    with internet.unreachable():
        _all_say(incus, shipped, online, "Failed to connect to registry-1.docker.io port 443")


def test_untrusted_certificate_is_one_clear_line(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    with internet.untrusted():
        _all_say(incus, shipped, online, "SSL certificate problem")


def test_after_the_failures_the_path_works_again(
    incus: PylxdIncus, shipped: Plex, internet: SimulatedInternet, online: dict[str, Any]
) -> None:
    results = _smoke(incus, shipped, online["digests"])
    assert all(r.ok for r in results)
