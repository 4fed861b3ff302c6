"""Debian's docker-registry (CNCF Distribution 2.8) as pull-through caches, one per upstream.

A Distribution proxy fronts exactly ONE upstream and must be served at a domain root, so each
upstream gets its own instance on its own port (`registry.port + i`, in upstream order) with
its own storage directory, run by one systemd template unit (`plex-registry@<upstream>`).

Facts checked against docker-registry 2.8.2+ds1 (Debian bookworm) on this machine:
- unknown config keys are ignored, so `proxy.ttl` (honoured from Distribution 3.0 on) is
  harmless on 2.8, which uses a fixed 168h;
- `serve` panics at start when the upstream is unreachable, hence `Restart=always` with no
  start limit in the unit;
- 2.8 has no way to skip TLS verification of the upstream: an https upstream with
  `tls_verify: false` is refused here rather than silently verified.

A config with an upstream password is SECRET: it is rendered 0640 root:docker-registry (the
service user must read it) and must never be printed or logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from plex.errors import ConfigError
from plex.model.plex import Plex, Upstream
from plex.plexfile.home import project_root
from plex.registry.base import RenderedFile, upstream
from plex.registry.credentials import Credentials

CONFIG_DIR = "/etc/docker/registry"
ROOT_DIRECTORY = "/var/lib/docker-registry"
BINARY = "/usr/bin/docker-registry"
SERVICE_USER = "docker-registry"  # created by the Debian package
UNIT_TEMPLATE = "plex-registry@.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_TEMPLATE}"
TTL = "168h"
# systemd unit-name characters that need no escaping, so %i == %I and paths stay readable.
_INSTANCE_RE = re.compile(r"[A-Za-z0-9:_.-]+")


@dataclass(frozen=True)
class Proxy:
    """One docker-registry instance caching one upstream. `config` may hold a password."""

    upstream: Upstream
    port: int
    config: dict[str, Any] = field(repr=False, compare=False)
    unit_name: str

    @property
    def instance(self) -> str:
        return self.upstream.name

    @property
    def config_path(self) -> str:
        return f"{CONFIG_DIR}/{self.instance}.yml"

    @property
    def has_secrets(self) -> bool:
        return "password" in self.config.get("proxy", {})

    def __repr__(self) -> str:
        return f"Proxy({self.upstream.name!r}, port={self.port}, unit={self.unit_name!r})"

    __str__ = __repr__


def unit_name(upstream_name: str) -> str:
    return f"plex-registry@{upstream_name}.service"


def _check(plex: Plex, i: int, u: Upstream) -> None:
    where = plex.source or "<plex>"
    if not _INSTANCE_RE.fullmatch(u.name):
        raise ConfigError(
            where,
            f"registry.upstreams[{i}].name",
            f"'{u.name}' cannot name a systemd unit instance",
            hint="use the registry host name, e.g. docker.io",
        )
    if u.url.startswith("https://") and not u.tls_verify:
        raise ConfigError(
            where,
            f"registry.upstreams[{i}].tls_verify",
            "the distribution engine cannot skip TLS verification of an upstream",
            hint="use registry.engine: zot, or keep tls_verify: true",
        )
    if i > 0 and plex.registry.port + i > 65535:
        raise ConfigError(
            where, "registry.port", f"upstream {i + 1} would need port {plex.registry.port + i}"
        )


def proxy_config(
    plex: Plex, u: Upstream, port: int, credentials: Credentials | None = None
) -> dict[str, Any]:
    """docker-registry's config.yml for one upstream (with its login when one is given)."""
    proxy: dict[str, Any] = {"remoteurl": u.url}
    login = credentials.get(u.name) if credentials is not None else None
    if login is not None:
        proxy["username"] = login.username
        proxy["password"] = login.password.reveal()
    proxy["ttl"] = TTL
    return {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "plex-registry", "upstream": u.name}},
        "storage": {
            "filesystem": {"rootdirectory": f"{ROOT_DIRECTORY}/{u.name}"},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f":{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
        "proxy": proxy,
    }


def distribution_proxies(plex: Plex, credentials: Credentials | None = None) -> list[Proxy]:
    """One proxy per upstream, on `registry.port + i` in upstream order."""
    if credentials is not None:
        credentials.check_upstreams(plex)
    out = []
    for i, u in enumerate(plex.registry.upstreams):
        _check(plex, i, u)
        port = plex.registry.port + i
        out.append(Proxy(u, port, proxy_config(plex, u, port, credentials), unit_name(u.name)))
    return out


def port_of(plex: Plex, upstream_name: str) -> int:
    """The port the proxy for `upstream_name` listens on."""
    u = upstream(plex, upstream_name)  # UsageError naming the upstreams when unknown
    return plex.registry.port + plex.registry.upstreams.index(u)


def unit_text() -> str:
    """The systemd template unit; instance = upstream name, config = CONFIG_DIR/<name>.yml.

    bake/templates/plex-registry@.service.j2, the same file the registry image's bake renders."""
    import jinja2  # start-up time: `plex validate` loads this module, only a bake renders

    template = project_root() / "bake" / "templates" / "plex-registry@.service.j2"
    text = template.read_text(encoding="utf-8")
    unit: str = jinja2.Template(text, keep_trailing_newline=True).render(unit_vars())
    return unit


def unit_vars() -> dict[str, str]:
    """What the unit template names: the bake context holds them too."""
    return {
        "registry_user": SERVICE_USER,
        "registry_binary": BINARY,
        "registry_config_dir": CONFIG_DIR,
    }


def render_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def distribution_files(plex: Plex, credentials: Credentials | None = None) -> list[RenderedFile]:
    """The unit template plus one config per upstream (secret ones 0640 root:docker-registry)."""
    files = [RenderedFile(UNIT_PATH, unit_text())]
    for p in distribution_proxies(plex, credentials):
        secret = p.has_secrets
        files.append(
            RenderedFile(
                p.config_path,
                render_yaml(p.config),
                mode=0o640 if secret else 0o644,
                group=SERVICE_USER if secret else "root",
                secret=secret,
            )
        )
    return files
