"""Bootstrap manifests on real Incus: a one-server plex is baked and deployed with a manifests
directory and kured on; the server gets the files before its first start, the RKE2 stand-in's
deploy controller records them as Addons, and `plex status` shows them applied."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.model.plex import Plex, Role
from plex.plexfile.bootstrap import MANIFESTS_DIR
from plex.plexfile.load import parse_plex
from plex.services.bake import Baker, Paths
from plex.services.deploy import bootstrap_rows, deploy
from plex.services.destroy import destroy
from plex.store.identity import ensure_identity
from tests.fixtures.fake_incus import FakeIncus

from .conftest import ROOT

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus

pytestmark = pytest.mark.incus

GITREPO = (
    "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n"
    "  name: lab\n  namespace: flux-system\nspec:\n  interval: 1m\n"
    "  url: http://git.lab.internal/lab.git\n"
)


@pytest.fixture(scope="module")
def boot_plex(test_plex: Plex, tmp_path_factory: pytest.TempPathFactory) -> Plex:
    """One server and the registry it pulls through (no lb, no agents), a bootstrap directory
    and kured on."""
    d = tmp_path_factory.mktemp("boot")
    (d / "bootstrap").mkdir()
    (d / "bootstrap" / "10-flux-system.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n"
    )
    (d / "bootstrap" / "20-lab.yaml").write_text(GITREPO)
    data = test_plex.model_dump(mode="json", exclude={"source"})
    data["name"] = "boot"
    data["network"]["vip"] = None
    data["network"]["virtual_router_id"] = 61
    data["roles"] = {
        "registry": {**data["roles"]["registry"], "offset": 60},
        "server": {**data["roles"]["server"], "count": 1, "offset": 61},
    }
    data["roles"]["server"].pop("capacity", None)
    data["bootstrap"] = {"manifests": "bootstrap"}
    data["kured"] = {"enabled": True}
    f = d / "boot.yaml"
    f.write_text(yaml.safe_dump(data))
    return parse_plex(f.read_text(), str(f))


def test_the_cluster_applies_the_bootstrap_manifests_itself(
    incus: PylxdIncus, boot_plex: Plex, state_dirs: Path
) -> None:

    ensure_identity(boot_plex)
    Baker(boot_plex, incus, Paths.under(ROOT)).bake([Role.REGISTRY, Role.SERVER])
    try:
        deploy(boot_plex, incus, ROOT)
        node = "boot-server1"
        listing = incus.exec(node, ["sh", "-c", f"cd {MANIFESTS_DIR} && stat -c '%a %n' *"])
        assert listing.stdout.split("\n")[:3] == [
            "600 10-flux-system.yaml",
            "600 20-lab.yaml",
            "600 plex-kured.yaml",
        ], listing.output
        pushed = incus.pull_file(node, f"{MANIFESTS_DIR}/20-lab.yaml").decode()
        assert pushed == GITREPO
        deadline = time.monotonic() + 60
        rows = bootstrap_rows(boot_plex, incus)
        while not all(r["applied"] for r in rows) and time.monotonic() < deadline:
            time.sleep(2)
            rows = bootstrap_rows(boot_plex, incus)
        assert [(r["addon"], r["state"]) for r in rows] == [
            ("10-flux-system", "applied"),
            ("20-lab", "applied"),
            ("plex-kured", "applied"),
        ]
        # What the stand-in recorded, through the same API a real RKE2 serves.
        raw = incus.exec(
            node,
            [
                "/var/lib/rancher/rke2/bin/kubectl",
                "--kubeconfig",
                "/etc/rancher/rke2/rke2.yaml",
                "get",
                "--raw",
                "/apis/k3s.cattle.io/v1/namespaces/kube-system/addons",
            ],
        )
        addons = {a["metadata"]["name"]: a for a in json.loads(raw.stdout)["items"]}
        assert addons["plex-kured"]["status"]["objects"][-1] == "DaemonSet/kured"
        assert addons["20-lab"]["spec"]["source"] == f"{MANIFESTS_DIR}/20-lab.yaml"
    except BaseException:
        journal = incus.exec(
            "boot-server1", ["journalctl", "-u", "rke2-server", "-n", "40", "--no-pager"]
        )
        print(journal.output)
        raise
    finally:
        destroy(boot_plex, incus, everything=True)


def test_status_json_shows_the_bootstrap_rows(boot_plex: Plex, tmp_path: Path) -> None:
    # Without a cluster the rows still list every manifest, with why the state is unknown.
    rows = bootstrap_rows(boot_plex, FakeIncus(boot_plex.incus.project))  # nothing deployed
    assert [r["manifest"] for r in rows] == [
        "10-flux-system.yaml",
        "20-lab.yaml",
        "plex-kured.yaml",
    ]
    assert all(r["state"].startswith("unknown: Incus exec ") for r in rows)
    assert all(r["state"].endswith(" in boot-server1: Instance not found") for r in rows)
