"""The nightly report: JSON history on disk, a self-contained HTML page, the inline SVG chart."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from plex.services.nightly_report import (
    FORMAT,
    KEEP_REPORTS,
    chart_svg,
    load_history,
    nice_ceiling,
    render_html,
    report_dir,
    write_report,
)

SVG = "{http://www.w3.org/2000/svg}"


def run(i: int, ok: bool = True, bake: float = 12.0, reset: float | None = 240.0) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "plex": "demo",
        "run": f"2025010{i}T020000Z-000{i}",
        "started_at": 1_735_700_000 + i * 86_400,
        "seconds": 300.0 + i,
        "ok": ok,
        "failed_step": None if ok else "smoke",
        "error": None if ok else "demo-agent1: <pull>",
        "steps": [
            {"name": "bake", "status": "ok", "started_at": 0, "seconds": bake, "error": None},
            {
                "name": "smoke",
                "status": "ok" if ok else "failed",
                "started_at": 0,
                "seconds": 3.0,
                "error": None if ok else "pull failed & <b>",
            },
        ],
        "bake_seconds": bake,
        "reset_seconds": reset,
        "cache_hits": 3,
        "bake": [
            {
                "role": "lb",
                "digest": "d" * 64,
                "fingerprint": "f" * 64,
                "cached": True,
                "package_cached": True,
                "seconds": 0.1,
                "size": 300 << 20,
                "package_digest": "p" * 64,
                "channel": "latest",
            }
        ],
        "deploy": {"waves": [{"nodes": ["demo-server1"], "seconds": 80.0}]},
        "smoke": [
            {
                "node": "demo-agent1",
                "probe": "pull docker.io/library/x:1",
                "ok": ok,
                "seconds": 2.0,
                "output": "",
                "attempts": 1,
            }
        ],
        "promoted": [
            {
                "role": "lb",
                "digest": "d" * 64,
                "previous": None,
                "alias": "demo/lb@stable",
                "package_digest": "p" * 64,
            }
        ]
        if ok
        else [],
        "pruned": [],
    }


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 3, 240, 251, 999)] == [1, 1, 1, 5, 250, 500, 1000]


def test_chart_is_well_formed_svg_with_a_point_per_run_and_series() -> None:
    history = [run(1), run(2, bake=0.4), run(3, ok=False, reset=None)]
    root = ET.fromstring(chart_svg(history))
    assert root.tag == f"{SVG}svg"
    circles = root.findall(f".//{SVG}circle")
    # bake x3 + reset x2 (the failed run has no reset time) + the legend's failed marker
    assert len(circles) == 6
    assert len(root.findall(f".//{SVG}polyline")) == 2
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any("failed at smoke" in t for t in titles)
    red = [c for c in circles if c.get("fill") == "#d33"]
    assert len(red) == 2  # the failed run's bake point and the legend
    # The y axis covers the largest value.
    assert any(t.text == "250s" for t in root.iter(f"{SVG}text"))


def test_chart_without_runs_says_so() -> None:
    assert "no runs yet" in chart_svg([])
    ET.fromstring(chart_svg([run(1)]))  # a single run is a point, not a division by zero


def test_html_is_self_contained_and_escapes_what_it_shows() -> None:
    page = render_html(run(3, ok=False), [run(1), run(2), run(3, ok=False)])
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"(src|href)=", page)
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    assert "pull failed &amp; &lt;b&gt;" in page  # step errors are text, not markup
    assert "demo-agent1: &lt;pull&gt;" in page
    assert "failed" in page and "<svg" in page
    good = render_html(run(1), [run(1)])
    assert "passed, promoted" in good and "demo/lb@stable" in good
    assert "300.0 MiB" in good


def test_write_report_keeps_history_latest_and_trims(state_dir: Path) -> None:
    d = report_dir("demo")
    assert d == state_dir / "demo" / "nightly"
    j, h = write_report(run(1), d)
    assert json.loads(j.read_text())["run"] == run(1)["run"]
    assert h.read_text() == (d / "latest.html").read_text()
    assert (j.stat().st_mode & 0o777) == 0o600
    write_report(run(2, ok=False), d)
    (d / "junk.json").write_text("{")
    (d / "other.json").write_text(json.dumps({"format": "something else"}))
    assert [r["run"] for r in load_history(d)] == [run(1)["run"], run(2)["run"]]
    assert json.loads((d / "latest.json").read_text())["ok"] is False
    # The page of run 2 charts both runs.
    assert (d / f"{run(2)['run']}.html").read_text().count("<title>2025010") >= 3


def test_old_reports_are_trimmed(state_dir: Path) -> None:
    extra = 3
    d = report_dir("demo")
    for i in range(KEEP_REPORTS + extra):
        r = run(1)
        r["run"] = f"2025{i:06d}"
        r["started_at"] = i
        write_report(r, d)
    runs = sorted(p.stem for p in d.glob("2025*.json"))
    assert len(runs) == KEEP_REPORTS and runs[0] == f"2025{extra:06d}"
    assert len(list(d.glob("2025*.html"))) == KEEP_REPORTS
