"""The nightly's report: one JSON file per run and a self-contained HTML page.

`<state>/<plex>/nightly/<run>.json` and `<run>.html`, plus `latest.json` / `latest.html` (what
CI uploads). The page has no external JS, CSS, fonts or images: its chart of bake and reset
times over the recent runs is inline SVG, so it renders from a file:// URL or a CI artifact.
Pure apart from the file writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from markupsafe import Markup

from plex.model.sizes import human_size
from plex.store.state import plex_dir, write_private

FORMAT = "plex-nightly/1"
KEEP_REPORTS = 100  # runs kept on disk; the chart shows the newest CHART_RUNS
CHART_RUNS = 30


def report_dir(plex_name: str) -> Path:
    return plex_dir(plex_name) / "nightly"


def load_history(directory: Path, limit: int = CHART_RUNS) -> list[dict[str, Any]]:
    """The newest `limit` run reports, oldest first (unreadable files are skipped)."""
    runs = []
    for p in sorted(directory.glob("*.json")):
        if p.name == "latest.json":
            continue
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(p.read_text())
            if isinstance(data, dict) and data.get("format") == FORMAT:
                runs.append(data)
    runs.sort(key=lambda r: (float(r.get("started_at", 0)), str(r.get("run", ""))))
    return runs[-limit:]


def write_report(run: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write the run's JSON and HTML (HTML with the history including this run)."""
    run_id = str(run["run"])
    json_path = directory / f"{run_id}.json"
    html_path = directory / f"{run_id}.html"
    raw = json.dumps(run, indent=2) + "\n"
    # 0600 like the rest of the state dir: the report names nodes and addresses.
    write_private(json_path, raw)
    page = render_html(run, load_history(directory))
    write_private(html_path, page)
    write_private(directory / "latest.json", raw)
    write_private(directory / "latest.html", page)
    _trim(directory)
    return json_path, html_path


def _trim(directory: Path) -> None:
    ids = sorted(p.stem for p in directory.glob("*.json") if p.name != "latest.json")
    for old in ids[:-KEEP_REPORTS]:
        for suffix in (".json", ".html"):
            (directory / f"{old}{suffix}").unlink(missing_ok=True)


# -- the chart ---------------------------------------------------------------------------------

SERIES = (("bake_seconds", "bake", "#2f6fb0"), ("reset_seconds", "reset (deploy)", "#d0802a"))


def nice_ceiling(v: float) -> float:
    """A round axis maximum at or above v (1, 2, 2.5, 5 times a power of ten)."""
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * p:
            return float(m * p)
    return float(10 * p)


def _label(run: dict[str, Any]) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(float(run.get("started_at", 0))))


def chart_svg(history: Sequence[dict[str, Any]], width: int = 760, height: int = 280) -> str:
    """Bake and reset seconds per run as two lines; failed runs get a red marker."""
    left, right, top, bottom = 56, 44, 30, 58
    pw, ph = width - left - right, height - top - bottom
    values = [float(r[k]) for r in history for k, _, _ in SERIES if r.get(k) is not None]
    ymax = nice_ceiling(max(values, default=0.0))
    n = len(history)

    def x(i: int) -> float:
        return left + (pw / 2 if n == 1 else pw * i / (n - 1))

    def y(v: float) -> float:
        return top + ph - ph * v / ymax

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        'aria-label="bake and reset seconds over recent nightly runs">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for k in range(5):  # horizontal grid with seconds
        v = ymax * k / 4
        yy = y(v)
        out.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#e3e3e3"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" '
            f'font-size="11" fill="#555">{v:g}s</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>'
    )
    if n == 0:
        out.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" '
            'font-size="13" fill="#777">no runs yet</text>'
        )
    step = max(1, math.ceil(n / 10))  # at most ~10 x labels
    for i, r in enumerate(history):
        if i % step == 0 or i == n - 1:
            out.append(
                f'<text x="{x(i):.1f}" y="{top + ph + 16}" text-anchor="middle" '
                f'font-size="10" fill="#555">{escape(_label(r))}</text>'
            )
        if not r.get("ok"):
            out.append(
                f'<rect x="{x(i) - 4:.1f}" y="{top}" width="8" height="{ph}" '
                'fill="#d33" fill-opacity="0.12"><title>'
                f"{escape(str(r.get('run')))}: failed at "
                f"{escape(str(r.get('failed_step')))}</title></rect>"
            )
    for key, name, color in SERIES:
        pts = [(x(i), y(float(r[key]))) for i, r in enumerate(history) if r.get(key) is not None]
        if len(pts) > 1:
            out.append(
                '<polyline fill="none" stroke-width="2" stroke="'
                + color
                + '" points="'
                + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
                + '"/>'
            )
        for i, r in enumerate(history):
            if r.get(key) is None:
                continue
            fill = color if r.get("ok") else "#d33"
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(float(r[key])):.1f}" r="4" '
                f'fill="{fill}" stroke="{color}"><title>{escape(str(r.get("run")))} '
                f"{escape(name)}: {float(r[key]):.1f}s</title></circle>"
            )
    lx = left
    for _key, name, color in SERIES:
        out.append(
            f'<rect x="{lx}" y="8" width="14" height="4" fill="{color}"/>'
            f'<text x="{lx + 20}" y="14" font-size="12" fill="#333">{escape(name)}'
            "</text>"
        )
        lx += 150
    out.append(
        f'<circle cx="{lx + 6}" cy="10" r="4" fill="#d33"/><text x="{lx + 16}" y="14" '
        'font-size="12" fill="#333">failed run</text>'
    )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" '
        'font-size="11" fill="#555">nightly runs (UTC)</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


# -- the page ----------------------------------------------------------------------------------
# plex/services/templates/nightly.html.j2, autoescaped: run values are text, never markup.


def _status(s: str) -> Markup:
    return Markup('<span class="{0}">{0}</span>').format(s)


def _code(s: Any, n: int = 12) -> Markup:
    return Markup("<code>{}</code>").format(str(s or "-")[:n])


def render_html(run: dict[str, Any], history: Sequence[dict[str, Any]]) -> str:
    """The whole page for one run (history: oldest first, may include this run)."""
    import jinja2  # only a nightly renders the page

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    dep = run.get("deploy") or {}
    return env.get_template("nightly.html.j2").render(
        run={"plex": None, "run": None, "seconds": 0, "cache_hits": 0, "bake": [], "error": None}
        | run,
        ok=bool(run.get("ok")),
        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(run.get("started_at", 0)))),
        history=history,
        chart=Markup(chart_svg(history)),  # noqa: S704 - built from escaped values above
        steps=[
            [s["name"], _status(s["status"]), f"{float(s['seconds']):.1f}", s.get("error") or ""]
            for s in run.get("steps", [])
        ],
        bake=[
            [
                b["role"],
                _code(b["digest"]),
                "cache hit"
                if b.get("cached")
                else ("built (package layer cached)" if b.get("package_cached") else "built"),
                _code(b.get("package_digest")) + " " + (b.get("channel") or ""),
                f"{float(b['seconds']):.1f}",
                human_size(b.get("size") or None),
            ]
            for b in run.get("bake", [])
        ],
        waves=[
            [str(i), ", ".join(w["nodes"]), f"{float(w['seconds']):.1f}"]
            for i, w in enumerate(dep.get("waves", []), 1)
        ],
        smoke=[
            [
                s["node"],
                s["probe"],
                _status("ok" if s["ok"] else "failed"),
                f"{float(s['seconds']):.1f}",
                str(s.get("attempts", "")),
            ]
            for s in run.get("smoke", [])
        ],
        promoted=[
            [
                p["role"],
                _code(p["digest"]),
                _code(p.get("previous")),
                _code(p["alias"], 80),
                _code(p.get("package_digest")),
            ]
            for p in run.get("promoted", [])
        ],
        pruned=[[p["role"], _code(p["digest"])] for p in run.get("pruned", [])],
    )
