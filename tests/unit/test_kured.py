"""The kured manifest from reboot_windows, checked against kured's own flags and parsing rules
(deploy/kured/kured-flags.txt, pinned from kubereboot/kured with its source)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.deploy.kured import manifest
from plex.errors import ConfigErrors
from plex.model.plex import Plex, RebootWindows
from plex.model.reboot import kured_enabled as enabled
from plex.model.reboot import kured_window, parse_day
from plex.plexfile.load import load_plex, parse_plex

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ROOT / "deploy" / "kured" / "kured-flags.txt"
# kured pkg/timewindow/timewindow.go parseTime: Go layouts "15:04", "15:04:06", "03:04pm",
# "15", "03pm" (hours 0-23, minutes 0-59).
TIME_LAYOUTS = [
    r"([01]?\d|2[0-3]):[0-5]\d",
    r"([01]?\d|2[0-3]):[0-5]\d:\d\d",
    r"(0\d|1[0-2]):[0-5]\d(am|pm)",
    r"([01]?\d|2[0-3])",
    r"(0\d|1[0-2])(am|pm)",
]


def pinned_flags() -> dict[str, str]:
    out = {}
    for line in FLAGS.read_text().splitlines():
        if line.startswith("--"):
            flag, kind, _default = line.split(" ", 2)
            out[flag] = kind
    return out


def daemonset(plex: Plex) -> dict[str, Any]:
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifest(plex)) if d]
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def omniplex() -> Plex:
    return load_plex(ROOT / "plexes" / "omniplex.yaml")


def test_omniplex_windows_become_kured_start_end_and_days() -> None:
    plex = omniplex()
    assert enabled(plex)  # MicroOS kube nodes write kured's sentinel
    cmd = daemonset(plex)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[0] == "/usr/bin/kured"
    got = dict(a[2:].split("=", 1) for a in cmd[1:])
    # slots [17, 18] x offsets [0..45], 1h each: 17:00 to 18:45 + 1h.
    assert got["start-time"] == "17:00" and got["end-time"] == "19:45"
    assert got["reboot-days"] == "su,mo,tu,we,th,fr,sa"
    assert got["time-zone"] == "UTC"


def test_every_rendered_flag_is_a_real_kured_flag_with_a_value_kured_parses() -> None:
    flags = pinned_flags()
    plex = omniplex()
    container = daemonset(plex)["spec"]["template"]["spec"]["containers"][0]
    for arg in container["command"][1:]:
        flag, _, value = arg.partition("=")
        assert flag in flags, f"{flag} is not a kured flag ({FLAGS})"
        kind = flags[flag]
        if flag in ("--start-time", "--end-time"):
            assert any(re.fullmatch(p, value) for p in TIME_LAYOUTS), arg
        elif kind == "stringslice":
            for day in value.split(","):
                parse_day(day)
        elif kind == "int":
            int(value)
        elif kind == "duration":
            assert re.fullmatch(r"(\d+(ns|us|ms|s|m|h))+|0", value), arg
    # The node name comes from the downward API, as kured-ds.yaml passes it.
    assert container["env"] == [
        {"name": "KURED_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    mount = container["volumeMounts"][0]["mountPath"]
    sentinel = next(a for a in container["command"] if a.startswith("--reboot-sentinel="))
    assert sentinel == f"--reboot-sentinel={mount}/reboot-required"


def test_the_manifest_is_kubernetes_objects_in_json_documents() -> None:
    text = manifest(omniplex())
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "DaemonSet",
    ]
    for raw in text.split("---\n")[1:]:
        json.loads(raw)  # each document is JSON: no YAML emitter can change a value
    ds = daemonset(omniplex())
    assert ds["metadata"] == {
        "name": "kured",
        "namespace": "kube-system",
        "labels": ds["metadata"]["labels"],
    }  # --ds-name/--ds-namespace
    assert ds["spec"]["template"]["spec"]["hostPID"] is True


@pytest.mark.parametrize(("day", "n"), [("su", 0), ("Sunday", 0), ("6", 6), ("fri", 5)])
def test_days_parse_as_kured_parses_them(day: str, n: int) -> None:
    assert parse_day(day) == n


@pytest.mark.parametrize("day", ["7", "-1", "weekday", "sonntag"])
def test_days_kured_refuses_are_refused(day: str) -> None:
    with pytest.raises(ValueError, match="Invalid weekday"):
        parse_day(day)


def test_a_window_crossing_midnight_is_refused_because_kured_would_never_reboot() -> None:
    with pytest.raises(ValueError, match="after midnight"):
        kured_window(RebootWindows(slots=(23,), offsets=(30,), duration="1h"))
    assert kured_window(RebootWindows(slots=(22,), offsets=(0, 30), duration="1h")).end == "23:30"


def test_the_plex_file_reports_a_bad_day_and_a_midnight_window_on_its_lines() -> None:
    text = (ROOT / "plexes" / "omniplex.yaml").read_text()
    bad_day = r"o.yaml:\d+: reboot_windows\.days: Invalid weekday: funday"
    with pytest.raises(ConfigErrors, match=bad_day):
        parse_plex(text.replace("duration: 1h", "duration: 1h\n  days: [mo, funday]"), "o.yaml")
    with pytest.raises(ConfigErrors, match=r"o.yaml:\d+: reboot_windows\.slots: .*after midnight"):
        parse_plex(text.replace("slots: [17, 18]", "slots: [23]"), "o.yaml")


def test_kured_is_off_for_debian_container_nodes_unless_asked() -> None:
    demo = load_plex(ROOT / "plexes" / "demo.yaml")
    assert not enabled(demo)
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["kured"] = {"enabled": True}
    assert enabled(parse_plex(yaml.safe_dump(data), "demo.yaml"))
