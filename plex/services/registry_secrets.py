"""The registry's secret files, pushed onto the registry node at deploy time: the upstream logins
(from the credentials file outside git) and the CI store's htpasswd line (from the identity).

Images never hold them: they are baked without credentials.
"""

from __future__ import annotations

from plex.backends.incus.protocol import Incus
from plex.errors import BackendError
from plex.model.plex import Engine, Plex
from plex.registry import distribution, store
from plex.registry.base import RenderedFile
from plex.registry.credentials import Credentials, load_plex_credentials
from plex.registry.engines import engine_files
from plex.services.node_shell import SYSTEMD_BOOTED
from plex.services.push import push_checked
from plex.store.identity import require_identity

# Run right after the node's first start: once systemd has booted, reset-failed (a unit that
# gave up, like zot without its htpasswd file, refuses a manual restart within its start
# limit), then restart.
RESTART = SYSTEMD_BOOTED + 'systemctl reset-failed "$@"; systemctl restart "$@"'


def _gid(incus: Incus, node: str, group: str) -> int:
    if group == "root":
        return 0
    res = incus.exec(node, ["getent", "group", group])
    parts = res.stdout.strip().split(":")
    if res.returncode != 0 or len(parts) < 3 or not parts[2].isdigit():
        raise BackendError(
            f"{node}: no group '{group}' for the registry's secret files",
            hint="is the registry image baked for this engine?",
        )
    return int(parts[2])


def _login_files(plex: Plex, creds: Credentials | None) -> tuple[list[RenderedFile], list[str]]:
    """The upstream logins' files and the units that read them."""
    if creds is None or not len(creds):
        return [], []
    files = [f for f in engine_files(plex, creds) if f.secret]
    if plex.registry.engine is Engine.ZOT:
        return files, ["zot.service"]
    units = [p.unit_name for p in distribution.distribution_proxies(plex, creds) if p.has_secrets]
    return files, units


def push_credentials(
    plex: Plex, incus: Incus, node: str, credentials: Credentials | None = None
) -> list[str]:
    """Write the registry's secret files on the registry node and restart the units reading
    them (each started without its file and is failing or waiting). Returns the paths."""
    creds = credentials if credentials is not None else load_plex_credentials(plex)
    files, units = _login_files(plex, creds)
    if store.enabled(plex):
        files.append(store.secret_file(plex, require_identity(plex).store_password))
        units.append(store.unit(plex))
    for f in files:
        push_checked(
            incus, node, f.path, f.content.encode(), f.mode, gid=_gid(incus, node, f.group)
        )
    units = sorted(set(units))
    if files and units:
        res = incus.exec(node, ["sh", "-c", RESTART, "sh", *units])
        if res.returncode != 0:
            raise BackendError(f"{node}: restarting {', '.join(units)} failed: {res.output[-200:]}")
    return [f.path for f in files]
