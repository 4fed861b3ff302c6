"""Deploy-side operations that need no daemon: inventory, kubeconfig rewrite, locks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plex.errors import LockedError
from plex.model import owner
from plex.model.plex import Plex
from plex.plexfile.load import load_plex
from plex.services.deploy import inventory, inventory_yaml, kubeconfig
from plex.store.lock import plex_lock
from tests.fixtures.fake_incus import FakeIncus

ROOT = Path(__file__).resolve().parents[2]


def demo() -> Plex:
    return load_plex(ROOT / "plexes" / "demo.yaml")


def test_inventory_groups_nodes_by_role_with_their_addresses() -> None:
    inv = inventory(demo())["all"]
    assert inv["vars"]["plex_vip"] == "10.77.0.10"
    children = inv["children"]
    assert set(children["server"]["hosts"]) == {"demo-server1", "demo-server2", "demo-server3"}
    assert children["server"]["hosts"]["demo-server1"] == {
        "ansible_host": "10.77.0.21",
        "plex_role": "server",
        "plex_master": True,
    }
    assert children["kube"] == {"children": {"server": {}, "agent": {}}}
    assert yaml.safe_load(inventory_yaml(demo())) == inventory(demo())


KUBECONFIG = "/etc/rancher/rke2/rke2.yaml"
RKE2_YAML = b"clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n"


def test_kubeconfig_comes_from_the_master_pointing_at_the_vip() -> None:
    fake = FakeIncus("plex-demo")
    fake.add_instance("demo-server1", config={owner.PLEX: "demo", owner.NODE: "demo-server1"})
    fake.add_file("demo-server1", KUBECONFIG, RKE2_YAML, 0o600)
    kc = kubeconfig(demo(), fake)
    assert "server: https://10.77.0.10:6443" in kc and "127.0.0.1" not in kc
    # An evacuated master is read from its copy, demo-server1-alpha (the lost one is in Error).
    fake = FakeIncus("plex-demo")
    fake.members = {"alpha": "", "gamma": "offline"}
    fake.add_instance("demo-server1", "Error", {owner.PLEX: "demo"}, "gamma")
    copy = {owner.PLEX: "demo", owner.NODE: "demo-server1"}
    fake.add_instance("demo-server1-alpha", config=copy, location="alpha")
    fake.add_file("demo-server1-alpha", KUBECONFIG, RKE2_YAML.replace(b"127.0.0.1", b"10.0.0.9"))
    assert "server: https://10.77.0.10:6443" in kubeconfig(demo(), fake)


def test_a_second_deploy_of_the_same_plex_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    with plex_lock("demo", "deploy"):
        refused = pytest.raises(LockedError, match=r"another deploy of plex 'demo' is running")
        with refused, plex_lock("demo", "deploy"):
            pass
        with plex_lock("demo", "bake"):  # a bake is a different lock
            pass
    with plex_lock("demo", "deploy"):  # released on exit
        pass
