"""haproxy's runtime API lines and answers, and the lb's rendered haproxy.cfg checked by the real
`haproxy -c` (Debian's haproxy is installed by bin/setup-incus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from plex.bake.context import template_context
from plex.bake.render import Renderer
from plex.lb import haproxy
from plex.model.plex import Role
from plex.plexfile.load import load_plex
from plex.store.identity import ensure_identity

ROOT = Path(__file__).resolve().parents[2]

# `show servers state` as haproxy 2.6.12 (Debian 12) printed it for a backend of two servers,
# s1 up and s2 down, then s1 in forced maintenance (admin state 1).
HEADER = " ".join(
    [
        "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight",
        "srv_iweight srv_time_since_last_change srv_check_status srv_check_result",
        "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn",
        "srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr"
        " srv_agent_port",
    ]
)
SHOW_UP = f"""1
{HEADER}
3 b 1 s1 127.0.0.1 2 0 1 1 2 6 3 4 6 0 0 0 - 18001 - 0 0 - - 0
3 b 2 s2 127.0.0.1 0 0 1 1 3 8 2 0 6 0 0 0 - 18002 - 0 0 - - 0

"""
SHOW_MAINT = SHOW_UP.replace(
    "3 b 1 s1 127.0.0.1 2 0 1 1 2 6 3 4 6", "3 b 1 s1 127.0.0.1 0 1 1 1 0 6 3 0 14"
)


def test_set_state_names_each_server_in_both_backends() -> None:
    line = haproxy.set_state(["demo-server2"], haproxy.State.MAINT)
    assert line == (
        "set server rke2-apiserver/demo-server2 state maint;"
        "set server rke2-supervisor/demo-server2 state maint"
    )


def test_answers_empty_on_success_and_messages_on_refusal() -> None:
    assert haproxy.errors("\n\n") == []
    assert haproxy.errors("\nNo such server.\n\n") == ["No such server."]


def test_show_servers_state_parses_up_down_and_maintenance() -> None:
    up = {s.server: s for s in haproxy.parse_state(SHOW_UP)}
    assert up["s1"].up and not up["s1"].maint
    assert not up["s2"].up
    maint = {s.server: s for s in haproxy.parse_state(SHOW_MAINT)}
    assert maint["s1"].maint and not maint["s1"].up
    assert [s.backend for s in haproxy.parse_state(SHOW_UP)] == ["b", "b"]


def rendered_lb_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    plex = load_plex(ROOT / "plexes" / "demo.yaml")
    identity, _ = ensure_identity(plex)
    ctx = template_context(plex, identity, Role.LB)
    return Renderer(ROOT / "bake" / "templates").render("haproxy.cfg.j2", ctx)


def test_lb_config_opens_the_admin_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = rendered_lb_config(tmp_path, monkeypatch)
    assert f"stats socket {haproxy.SOCKET} mode 600 level admin" in cfg
    for backend in haproxy.BACKENDS:
        assert f"backend {backend}" in cfg


def test_lb_config_passes_the_real_haproxy_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(exe).exists(), "haproxy is in bin/setup-incus APT_PACKAGES"
    cfg = tmp_path / "haproxy.cfg"
    # The socket's directory must exist for the check to pass: point it at the tmp dir.
    cfg.write_text(
        rendered_lb_config(tmp_path, monkeypatch).replace(
            haproxy.SOCKET, str(tmp_path / "admin.sock")
        )
    )
    res = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
