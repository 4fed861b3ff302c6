"""No secret in any image or exported artifact: bake every role of a plex that has upstream
registry logins, export each role's image, and scan every byte of every artifact (and its
manifest) for every secret of the identity and every registry password. Expect 0 hits."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import zstandard

from plex.bake.secret_scan import Hit, scan
from plex.model import topology
from plex.model.plex import Plex, Role
from plex.services import images as art
from plex.services.bake import Baker, Paths
from plex.store.identity import require_identity

from .conftest import ROOT, demo_plex

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from tests.fixtures.release_server import ReleaseServer
    from tests.fixtures.upstream_registry import Upstream

pytestmark = pytest.mark.incus

CHUNK = 1 << 20


def artifact_chunks(path: Path) -> Iterator[bytes]:
    """Every uncompressed byte of an artifact (the tar stream: metadata, templates, rootfs)."""
    with (
        path.open("rb") as f,
        zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as r,
    ):
        while chunk := r.read(CHUNK):
            yield chunk


@pytest.fixture(scope="module")
def scan_plex(
    session_project: str,
    standin_release: ReleaseServer,
    upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
    test_plex: Plex,
) -> tuple[Plex, str]:
    creds = tmp_path_factory.mktemp("scan-creds") / "credentials.yaml"
    password = "pw-" + secrets.token_urlsafe(24)
    creds.write_text(f"docker.io: {{username: plexscan, password: {password}}}\n")
    creds.chmod(0o600)
    overrides: dict[str, object] = {
        "name": "scanplex",
        "kubernetes.release_url": test_plex.kubernetes.release_url,
        "registry.upstreams": [{"name": "docker.io", "url": upstream.url}],
        "registry.credentials_file": str(creds),
    }
    for role in ("server", "agent"):
        rc = test_plex.roles.get(Role(role))
        if rc is not None and "linux.kernel_modules" in rc.config:
            overrides[f"roles.{role}.config"] = {"linux.kernel_modules": ""}
    return demo_plex(session_project, **overrides), password


def test_no_secret_in_any_exported_artifact(
    incus: PylxdIncus, state_dirs: Path, scan_plex: tuple[Plex, str], tmp_path: Path
) -> None:
    plex, password = scan_plex
    roles = [r for r, rc in plex.roles.items() if rc.count]
    Baker(plex, incus, Paths.under(ROOT)).bake(roles)
    identity = require_identity(plex)
    nodes = [(n.name, n.role) for n in topology.nodes(plex, reserved=True)]
    needles = [*identity.secret_needles(nodes), ("registry password docker.io", password)]
    # Every node's host keys and node password, the token, the VRRP password and the login.
    assert any(":/etc/rancher/node/password" in w for w, _ in needles)
    assert len(needles) >= 2 + 8 * 2 * 3 + 1
    # The included marker proves the scan reads real content: the lb image names the file
    # its password will be pushed to, the server image carries RKE2's config.
    markers = {
        Role.LB: "include /etc/keepalived/plex-vrrp-auth.conf",
        Role.SERVER: "cluster-cidr:",
        Role.REGISTRY: "proxy:",
        Role.AGENT: "server: https://",
    }
    total = 0
    all_hits: dict[str, list[Hit]] = {}
    for role in roles:
        m = art.export_image(incus, plex.name, role, tmp_path)
        path = tmp_path / m.filename
        found = scan(artifact_chunks(path), [*needles, ("marker", markers[role])])
        all_hits[role.value] = [h for h in found if h.what != "marker"]
        all_hits[role.value] += scan([art.manifest_path_for(path).read_bytes()], needles)
        assert any(h.what == "marker" for h in found), f"{role}: marker not found"
        total += m.uncompressed_size
    assert all_hits == {r.value: [] for r in roles}  # 0 hits
    assert total > 100 << 20  # whole root filesystems were read
    print(
        f"secrets scan: {len(needles)} needles over {len(roles)} artifacts, "
        f"{total >> 20} MiB uncompressed: 0 hits"
    )
