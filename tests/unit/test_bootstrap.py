"""Bootstrap manifests: RKE2's auto-deploy rules checked before a deploy, part of the servers'
spec, and recorded by the RKE2 stand-in the way RKE2's deploy controller names Addons."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.backends.incus.protocol import ExecResult
from plex.deploy.kured import server_manifests
from plex.deploy.spec import RoleProfile, instance_spec
from plex.errors import ConfigError
from plex.model import owner, topology
from plex.model.image import ImageRef
from plex.model.plex import Plex, Role
from plex.plexfile.bootstrap import MANIFESTS_DIR
from plex.plexfile.load import parse_plex
from plex.services.deploy import bootstrap_rows
from tests.fixtures.fake_incus import FakeIncus

ROOT = Path(__file__).resolve().parents[2]
FLUX_NS = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n"
GITREPO = (
    "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n"
    "  name: lab\n  namespace: flux-system\nspec:\n  url: http://git.lab/lab.git\n"
)


def plex_with(tmp_path: Path, manifests: str | None, **extra: Any) -> Plex:
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    if manifests is not None:
        data["bootstrap"] = {"manifests": manifests}
    data.update(extra)
    f = tmp_path / "demo.yaml"
    f.write_text(yaml.safe_dump(data))
    return parse_plex(f.read_text(), str(f))


def boot_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bootstrap"
    d.mkdir()
    (d / "10-flux-ns.yaml").write_text("# flux\n---\n" + FLUX_NS + "---\n")
    (d / "20-lab.yml").write_text(GITREPO)
    (d / "README.md").write_text("not a manifest")
    (d / ".hidden.yaml").write_text("kind: [")
    (d / "30-off.yaml").write_text("kind: [")  # would fail, but skipped:
    (d / "30-off.yaml.skip").write_text("")
    return d


def test_rke2_s_file_rules_pick_the_files_in_order(tmp_path: Path) -> None:
    boot_dir(tmp_path)
    got = server_manifests(plex_with(tmp_path, "bootstrap"))
    assert [m.name for m in got] == ["10-flux-ns.yaml", "20-lab.yml"]
    assert [m.addon for m in got] == ["10-flux-ns", "20-lab"]
    assert got[0].path == f"{MANIFESTS_DIR}/10-flux-ns.yaml"


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.yaml", "kind: [", "invalid YAML"),
        ("nokind.yaml", "apiVersion: v1\nmetadata: {name: x}\n", "needs apiVersion and kind"),
        ("rke2-canal.yaml", FLUX_NS, "RKE2 uses for its own"),
        ("plex-kured.yaml", FLUX_NS, "plex uses for its own"),
    ],
)
def test_files_rke2_would_reject_or_clobber_fail_naming_the_file(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    d = tmp_path / "bootstrap"
    d.mkdir()
    (d / name).write_text(text)
    with pytest.raises(ConfigError, match=problem) as e:
        server_manifests(plex_with(tmp_path, "bootstrap"))
    assert e.value.file == str(d / name)


def test_two_files_that_would_be_one_addon_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "bootstrap"
    d.mkdir()
    (d / "flux.yaml").write_text(FLUX_NS)
    (d / "flux.extra.json").write_text('{"apiVersion": "v1", "kind": "Namespace"}')
    with pytest.raises(ConfigError, match="same RKE2 Addon 'flux'"):
        server_manifests(plex_with(tmp_path, "bootstrap"))


def test_manifests_go_to_servers_only_and_changing_them_changes_the_server_spec(
    tmp_path: Path,
) -> None:
    d = boot_dir(tmp_path)
    plex = plex_with(tmp_path, "bootstrap", kured={"enabled": True})
    image = ImageRef(Role.SERVER, "d" * 64, "f" * 64, "demo/server")
    profile = RoleProfile({}, {})
    nodes = {n.name: n for n in topology.nodes(plex)}
    server = instance_spec(plex, nodes["demo-server2"], image, profile)
    agent = instance_spec(plex, nodes["demo-agent1"], image, profile)
    assert [m.name for m in server.manifests] == [
        "10-flux-ns.yaml",
        "20-lab.yml",
        "plex-kured.yaml",
    ]
    assert agent.manifests == ()
    (d / "20-lab.yml").write_text(GITREPO.replace("lab.git", "lab2.git"))
    again = instance_spec(plex, nodes["demo-server2"], image, profile)
    assert again.digest != server.digest
    # A plex without manifests keeps the digest it had before bootstrap existed.
    plain = plex_with(tmp_path, None)
    assert instance_spec(plain, nodes["demo-server2"], image, profile).manifests == ()


def standin() -> Any:  # the stand-in script (stdlib only, outside mypy): attributes unknown
    spec = importlib.util.spec_from_file_location(
        "standin_rke2", ROOT / "tests" / "fixtures" / "standin_rke2" / "rke2.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_standin_records_the_addons_rke2_would_apply(tmp_path: Path) -> None:
    rke2 = standin()
    d = boot_dir(tmp_path)
    (d / "40-broken.yaml").write_text("apiVersion: v1\nmetadata:\n  name: x\n")
    rke2.MANIFESTS = d
    rke2.ADDONS.clear()
    rke2.deploy_manifests()
    assert sorted(rke2.ADDONS) == ["10-flux-ns", "20-lab", "40-broken"]
    lab = rke2.ADDONS["20-lab"]
    assert lab["spec"] == {
        "source": str(d / "20-lab.yml"),
        "checksum": hashlib.sha256(GITREPO.encode()).hexdigest(),
    }
    assert lab["status"]["objects"] == ["GitRepository/lab"]
    assert rke2.ADDONS["10-flux-ns"]["status"]["objects"] == ["Namespace/flux-system"]
    broken = rke2.ADDONS["40-broken"]
    assert "checksum" not in broken["spec"]
    assert "Object 'Kind' is missing" in broken["status"]["error"]


def addons_of(plex: Plex, applied: dict[str, str]) -> FakeIncus:
    """A running master whose Addon list has `applied` (addon: checksum), as kubectl prints it."""
    items = [{"metadata": {"name": a}, "spec": {"checksum": c}} for a, c in applied.items()]
    fake = FakeIncus(
        on_exec=lambda _, argv: (
            ExecResult(0, json.dumps({"items": items}), "") if "get" in argv else None
        )
    )
    master = topology.master(plex).name
    fake.add_instance(master, config={owner.PLEX: plex.name, owner.NODE: master})
    return fake


def test_bootstrap_rows_say_what_the_cluster_applied_and_why_they_cannot_tell(
    tmp_path: Path,
) -> None:
    boot_dir(tmp_path)
    plex = plex_with(tmp_path, "bootstrap")
    flux, lab = server_manifests(plex)
    rows = bootstrap_rows(plex, addons_of(plex, {flux.addon: flux.sha256, lab.addon: "0" * 64}))
    assert [(r["manifest"], r["applied"]) for r in rows] == [(flux.name, True), (lab.name, False)]
    assert [r["state"] for r in rows] == ["applied", "older version applied"]
    # Without a cluster the rows still list every manifest, with why the state is unknown.
    rows = bootstrap_rows(plex, FakeIncus("plex-demo"))
    assert [r["manifest"] for r in rows] == [flux.name, lab.name]
    assert all(r["state"].startswith("unknown: Incus exec ") for r in rows)
    assert all(r["state"].endswith(" in demo-server1: Instance not found") for r in rows)
    # A stopped master: Incus refuses the exec, and the rows say so.
    stopped = addons_of(plex, {})
    stopped.stop("demo-server1")
    assert {r["state"].split(": ", 2)[-1] for r in bootstrap_rows(plex, stopped)} == {
        "Instance is not running"
    }
