"""The registry's secret files (upstream logins): pushed onto the registry node at deploy time.

Images never hold them: they are baked without credentials.
"""

from __future__ import annotations

from plex.backends.incus.protocol import Incus
from plex.errors import BackendError
from plex.model.plex import Engine, Plex
from plex.registry import distribution
from plex.registry.credentials import Credentials, load_plex_credentials
from plex.registry.engines import engine_files
from plex.services.push import push_checked


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


def push_credentials(
    plex: Plex, incus: Incus, node: str, credentials: Credentials | None = None
) -> list[str]:
    """Write the engine's secret files (upstream logins) on the registry node and restart the
    engine. Images never hold them: they are baked without credentials. Returns the paths."""
    creds = credentials if credentials is not None else load_plex_credentials(plex)
    if creds is None or not len(creds):
        return []
    files = [f for f in engine_files(plex, creds) if f.secret]
    for f in files:
        push_checked(
            incus, node, f.path, f.content.encode(), f.mode, gid=_gid(incus, node, f.group)
        )
    if plex.registry.engine is Engine.ZOT:
        units = ["zot.service"]
    else:
        units = [
            p.unit_name for p in distribution.distribution_proxies(plex, creds) if p.has_secrets
        ]
    if files and units:
        res = incus.exec(node, ["systemctl", "restart", *units])
        if res.returncode != 0:
            raise BackendError(f"{node}: restarting {', '.join(units)} failed: {res.output[-200:]}")
    return [f.path for f in files]
