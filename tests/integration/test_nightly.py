"""The nightly on real Incus: the demo plex as the staging plex, three runs in order.

1. a full nightly passes and promotes (stable aliases, catalog channel, package-layer channel),
2. a second one with nothing changed is all cache hits, and still redeploys and smoke-checks,
3. one with a broken recipe (containerd's registry mirror moves to a closed port) fails its
   smoke pull and promotes nothing: `stable` still points at run 1's images.

The smoke pull uses the upstream fixture's image through the plex registry. The HTML report of
the three runs is screenshot in headless Chromium (test-artifacts/nightly-report.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from plex.model import topology
from plex.model.image import image_alias
from plex.model.plex import NightlyConfig, Plex, Role
from plex.services.bake import Baker, Paths
from plex.services.destroy import destroy
from plex.services.nightly import Nightly
from plex.services.nightly_report import load_history, report_dir
from plex.store.catalog import load_catalog
from plex.store.channels import Channel, channel_alias, channels_path, load_channels

from .conftest import ROOT, alias_target

if TYPE_CHECKING:
    from plex.backends.incus.client import PylxdIncus
    from plex.services.bake import BakeResult
    from tests.fixtures.upstream_registry import Upstream

pytestmark = pytest.mark.incus

ARTIFACTS = ROOT / "test-artifacts"
# The node's docker.io mirror and upstream move to a closed port on the same addresses, in the
# registries.yaml RKE2 reads: like RKE2, the kube nodes cannot pull their runtime image and
# never become ready, and the deploy's probe says why (nothing is tried beyond the bridge).
BROKEN = (
    r"sed -i -E 's#(https?://[0-9.]+):[0-9]+#\1:9#g' "
    "/etc/rancher/rke2/registries.yaml"
)
RUNS: dict[str, Any] = {}  # what the ordered tests below hand to each other


@pytest.fixture(scope="module")
def staging(
    test_plex: Plex, upstream: Upstream, baked: dict[str, BakeResult], incus: PylxdIncus
) -> Iterator[Plex]:
    """The test plex with the upstream fixture's image as its smoke image; destroyed after."""
    p = test_plex.model_copy(
        update={
            "nightly": NightlyConfig(
                smoke_image=f"docker.io/{upstream.image}:{upstream.tag}", keep=3
            )
        }
    )
    yield p
    # Back to the good images (cache hits), and free the machine for the tests after this one.
    Baker(test_plex, incus, Paths.under(ROOT)).bake([Role(r) for r in baked])
    destroy(test_plex, incus)


def write_plex(p: Plex, path: Path) -> Path:
    path.write_text(yaml.safe_dump(p.model_dump(mode="json", exclude={"source"})))
    return path


def nightly_cli(plex_file: Path, home: Path) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ, "PLEX_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "plex", "nightly", str(plex_file), "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def uuids(incus: Any, p: Plex) -> dict[str, str]:
    return {n: i.uuid for n, i in incus.observe(p.name).instances.items()}


def stable_state(incus: Any, p: Plex) -> dict[str, Any]:
    roles = [r for r, rc in p.roles.items() if rc.count]
    aliases = {}
    for r in roles:
        img = incus.image_by_alias(channel_alias(p.name, r))
        aliases[r.value] = img.fingerprint if img else None
    return {
        "aliases": aliases,
        "catalog": load_catalog(p.name).channels.get("stable"),
        "channels": channels_path().read_bytes() if channels_path().exists() else None,
    }


def test_full_nightly_passes_and_promotes(incus: PylxdIncus, staging: Plex) -> None:
    assert load_catalog(staging.name).channels.get("stable") is None  # nothing promoted yet
    start = time.monotonic()
    run = Nightly(staging, incus, ROOT).run()
    RUNS["first_seconds"] = time.monotonic() - start
    assert run.ok, run.to_json()
    assert [s.status for s in run.steps] == ["ok"] * 5
    roles = {b["role"]: b for b in run.bake}
    assert set(roles) == {"registry", "lb", "server", "agent"}
    for role, b in roles.items():
        # The stable alias, the moving alias and the catalog channel name the image that ran.
        assert alias_target(incus, channel_alias(staging.name, role)) == b["fingerprint"]
        assert alias_target(incus, image_alias(staging.name, role)) == b["fingerprint"]
        assert load_catalog(staging.name).channels["stable"][role] == b["digest"]
    # Every package layer that passed is stable, with what it takes to rebuild it.
    stable = load_channels().records[Channel.STABLE.value]
    assert {r.key.split("/")[0] for r in stable.values()} == set(roles)
    for rec in stable.values():
        role = rec.key.split("/")[0]
        assert rec.package_digest == roles[role]["package_digest"]
        assert rec.package_layer().digest == rec.package_digest
        assert rec.plex == staging.name and rec.run == run.run_id
    checks = {s["probe"] for s in run.smoke}
    assert "VIP held by one lb" in checks
    assert f"pull {staging.nightly.smoke_image}" in checks
    assert any(c.startswith("registry serves library/plextest") for c in checks)
    assert sum(1 for s in run.smoke if s["probe"] == "systemd") == len(topology.nodes(staging))
    # The report: JSON with the numbers, HTML with its chart.
    assert run.report_json is not None and run.report_html is not None
    data = json.loads(run.report_json.read_text())
    assert data["ok"] and data["bake_seconds"] is not None and data["reset_seconds"] > 0
    assert data["cache_hits"] == 4  # the session's `baked` images
    assert "<svg" in run.report_html.read_text()
    RUNS["first"] = run.to_json()
    RUNS["stable"] = stable_state(incus, staging)


def test_second_nightly_with_nothing_changed_is_cache_hits_and_still_redeploys(
    incus: PylxdIncus, staging: Plex, tmp_path: Path
) -> None:
    assert "first" in RUNS, "needs the first nightly"
    before = uuids(incus, staging)
    start = time.monotonic()
    code, out, err = nightly_cli(write_plex(staging, tmp_path / "demo.yaml"), ROOT)
    RUNS["second_seconds"] = time.monotonic() - start
    assert code == 0, err[-3000:]
    assert out["ok"] and out["cache_hits"] == len(out["bake"]) == 4
    assert all(b["cached"] for b in out["bake"])
    after = uuids(incus, staging)
    kube = {n.name for n in topology.nodes(staging) if n.role.is_kube}
    assert {n for n in before if before[n] != after.get(n)} == kube  # redeployed
    assert [s["status"] for s in out["steps"]] == ["ok"] * 5
    assert any(s["probe"].startswith("pull ") and s["ok"] for s in out["smoke"])
    # Same images: promoting them again changes nothing that matters.
    assert stable_state(incus, staging)["aliases"] == RUNS["stable"]["aliases"]
    RUNS["stable"] = stable_state(incus, staging)


def broken_home(tmp_path: Path) -> Path:
    """A PLEX_HOME whose kube recipe breaks the nodes' docker.io mirror (registries.yaml)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(ROOT / "bake", home / "bake")
    for d in ("images", "deploy"):
        (home / d).symlink_to(ROOT / d)
    kube = home / "bake" / "kube.yaml"
    data = yaml.safe_load(kube.read_text())
    data.setdefault("commands", {}).setdefault("plex", []).append(BROKEN)
    kube.write_text(yaml.safe_dump(data))
    return home


def test_nightly_whose_smoke_fails_does_not_promote(
    incus: PylxdIncus, staging: Plex, tmp_path: Path
) -> None:
    assert "stable" in RUNS, "needs the first nightly"
    before = RUNS["stable"]
    start = time.monotonic()
    code, out, err = nightly_cli(write_plex(staging, tmp_path / "demo.yaml"), broken_home(tmp_path))
    RUNS["broken_seconds"] = time.monotonic() - start
    assert code == 5, err[-3000:]  # ProbeError's exit code
    assert "failed at deploy" in err and "rke2-runtime" in err, err[-2000:]
    assert ":9" in err  # the probe names the broken mirror
    assert not out["ok"] and out["failed_step"] == "deploy"
    assert [s["status"] for s in out["steps"]] == ["ok", "failed", "skipped", "skipped", "skipped"]
    rebuilt = {b["role"] for b in out["bake"] if not b["cached"]}
    assert rebuilt == {"server", "agent"}  # only the kube plex layers changed
    assert all(b["package_cached"] for b in out["bake"])
    # The broken images were deployed (the moving aliases point at them)...
    broken = {b["role"]: b["fingerprint"] for b in out["bake"]}
    assert alias_target(incus, image_alias(staging.name, "server")) == broken["server"]
    assert broken["server"] != before["aliases"]["server"]
    # ...and stable did not move: aliases, catalog channel and package-layer channels.
    assert stable_state(incus, staging) == before
    RUNS["broken"] = out


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    w, h = struct.unpack(">II", head[16:24])
    return w, h


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(staging: Plex) -> None:
    assert "broken" in RUNS, "needs the three nightlies"
    directory = report_dir(staging.name)
    history = load_history(directory)
    assert [r["ok"] for r in history[-3:]] == [True, True, False]
    page = (directory / "latest.html").read_text()
    # Self-contained: nothing loads from anywhere (URLs in error texts are only text).
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|(src|href)=", page)
    assert page.count("<circle") >= 6  # two series over three runs
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (bin/setup-incus installs it)")
        pytest.skip("chromium not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "nightly-report.png"
    shot.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            f"file://{directory / 'latest.html'}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert _png_size(shot) == (1200, 900)
    assert shot.stat().st_size > 30_000, "the screenshot looks blank"
    # Keep the numbers with the picture.
    (ARTIFACTS / "nightly-times.json").write_text(
        json.dumps({k: round(v, 1) for k, v in RUNS.items() if k.endswith("_seconds")}, indent=2)
        + "\n"
    )
