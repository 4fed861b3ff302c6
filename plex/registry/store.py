"""The registry as a store for CI outputs: a namespace that accepts authenticated pushes.

Both engines keep the store on the registry's cache volume, so it survives `plex reset`,
registry node replacement and `plex destroy` (not `destroy --everything`) like the cache.

- zot: the same instance as the pull-through cache. htpasswd auth is switched on and
  `accessControl` keeps what the nodes pull anonymous: `**` (every mirrored repository) grants
  `read` to anonymous and authenticated users alike, while `<namespace>/**` grants nothing to
  anonymous users and read/create/update/delete to the store's user. Zot applies the LONGEST
  glob that matches a repository (pkg/api/authz.go `can`, v2.1.20), so `ci/app` follows the
  store's rule and `docker.io/library/nginx` the mirror's. Sync never touches the namespace:
  on demand, zot maps a local repository back to an upstream only when it matches a content
  rule's `<destination>/<prefix>` (pkg/extensions/sync/content.go `GetContentByLocalRepo`), and
  every upstream syncs under its own destination prefix (`docker.io/**`), never `ci/...`.
- distribution: a proxy refuses every write (registry/proxy: "unsupported" on push, HTTP 405),
  so the store is a second, NON-proxy docker-registry instance on the registry node
  (`plex-registry@_store`, its own port and storage directory), behind htpasswd auth for
  reads and writes alike (Distribution has no per-repository rules).

The login: user `registry.store.user`, password in the identity (generated, never in an image);
the registry node gets only a bcrypt htpasswd line, the one hash both engines accept (zot
pkg/api/htpasswd.go, distribution registry/auth/htpasswd: golang.org/x/crypto/bcrypt).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from plex.errors import ConfigError
from plex.model.plex import Engine, Plex, Runtime
from plex.registry.base import RenderedFile, registry_address
from plex.registry.distribution import CONFIG_DIR, ROOT_DIRECTORY, SERVICE_USER, render_yaml

# Distribution instance name: not a registry host name (no `_` in one), so never an upstream's.
INSTANCE = "_store"
ZOT_HTPASSWD = "/etc/zot/htpasswd"
DISTRIBUTION_HTPASSWD = f"{CONFIG_DIR}/{INSTANCE}.htpasswd"
DISTRIBUTION_CONFIG = f"{CONFIG_DIR}/{INSTANCE}.yml"
BCRYPT_COST = 10  # golang.org/x/crypto/bcrypt DefaultCost
# zot's action names (pkg/api/constants/consts.go).
READ, WRITE = ["read"], ["read", "create", "update", "delete"]
# bcrypt's own base64 alphabet, for a salt made from stable data.
_BCRYPT_B64 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
)


def enabled(plex: Plex) -> bool:
    return plex.registry.store.enabled and registry_address(plex) is not None


def check(plex: Plex) -> None:
    """The store must not overlap the cache: its namespace is not an upstream's prefix, its
    distribution port is not a proxy's."""
    st = plex.registry.store
    where = plex.source or "<plex>"
    if plex.registry.runtime is not Runtime.INCUS:
        raise ConfigError(
            where,
            "registry.store.enabled",
            "the CI store runs on the registry node (registry.runtime: incus) only",
        )
    prefixes = {u.name.lower().replace(":", "-") for u in plex.registry.upstreams}
    if st.namespace in prefixes:
        raise ConfigError(
            where,
            "registry.store.namespace",
            f"'{st.namespace}' is the prefix an upstream syncs into",
            hint="pick another namespace, e.g. ci",
        )
    first, n = plex.registry.port, len(plex.registry.upstreams)
    if plex.registry.engine is Engine.DISTRIBUTION and first <= st.port < first + n:
        raise ConfigError(
            where,
            "registry.store.port",
            f"port {st.port} is an upstream proxy's ({first}..{first + n - 1})",
            hint=f"use a port from {first + n} on",
        )


def port(plex: Plex) -> int:
    """Where the store listens: zot's own port, or the distribution store instance's."""
    if plex.registry.engine is Engine.ZOT:
        return plex.registry.port
    return plex.registry.store.port


def host(plex: Plex) -> str:
    """`address:port` of the store, as `docker login` / skopeo take it."""
    addr = registry_address(plex) or ""
    return f"[{addr}]:{port(plex)}" if ":" in addr else f"{addr}:{port(plex)}"


def prefix(plex: Plex) -> str:
    """What a pushed image's name starts with: `host/ci/` on zot, `host/` on distribution."""
    if plex.registry.engine is Engine.ZOT:
        return f"{host(plex)}/{plex.registry.store.namespace}/"
    return f"{host(plex)}/"


def _salt(plex: Plex) -> bytes:
    """A fixed salt per plex and user: the same password renders the same line, so pushing it
    again changes nothing. (The password is 40 random characters: a salt only has to keep
    hashes of different plexes apart.)"""
    seed = hashlib.sha256(f"plex store {plex.name} {plex.registry.store.user}".encode()).digest()
    b64 = base64.b64encode(seed[:16]).translate(_BCRYPT_B64)[:22]
    return f"$2b${BCRYPT_COST:02d}$".encode() + b64


def htpasswd(plex: Plex, password: str) -> str:
    """SECRET-derived: `user:<bcrypt>` for the store's login."""
    import bcrypt  # only where a login is rendered: the CLI's start-up does not pay for it

    hashed = bcrypt.hashpw(password.encode(), _salt(plex)).decode()
    return f"{plex.registry.store.user}:{hashed}\n"


def zot_http(plex: Plex, metrics_anonymous: bool) -> dict[str, Any]:
    """zot's `http.auth` and `http.accessControl` for the store (merged into `http`)."""
    st = plex.registry.store
    access: dict[str, Any] = {
        "repositories": {
            "**": {"anonymousPolicy": READ, "defaultPolicy": READ},
            f"{st.namespace}/**": {
                "anonymousPolicy": [],
                "defaultPolicy": [],
                "policies": [{"users": [st.user], "actions": WRITE}],
            },
        }
    }
    if metrics_anonymous:
        # `registry stats` reads /metrics from the node without a login (v2.1.18 and later).
        access["metrics"] = {"anonymousPolicy": READ}
    return {"auth": {"htpasswd": {"path": ZOT_HTPASSWD}}, "accessControl": access}


def distribution_config(plex: Plex) -> dict[str, Any]:
    """docker-registry's config.yml for the store: no proxy section, htpasswd auth."""
    return {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "plex-registry", "upstream": INSTANCE}},
        "storage": {
            "filesystem": {"rootdirectory": f"{ROOT_DIRECTORY}/{INSTANCE}"},
            "cache": {"blobdescriptor": "inmemory"},
            "delete": {"enabled": True},  # CI outputs get pruned; the cache never deletes
        },
        "http": {
            "addr": f":{plex.registry.store.port}",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": f"plex {plex.name} store", "path": DISTRIBUTION_HTPASSWD}},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }


def secret_file(plex: Plex, password: str) -> RenderedFile:
    """The htpasswd file for the registry node (0600 root for zot, which runs as root; 0640
    root:docker-registry for distribution's service user)."""
    if plex.registry.engine is Engine.ZOT:
        return RenderedFile(ZOT_HTPASSWD, htpasswd(plex, password), mode=0o600, secret=True)
    return RenderedFile(
        DISTRIBUTION_HTPASSWD,
        htpasswd(plex, password),
        mode=0o640,
        group=SERVICE_USER,
        secret=True,
    )


def distribution_files(plex: Plex) -> list[RenderedFile]:
    """The store instance's config (public: the login is in the htpasswd file), or nothing."""
    if not enabled(plex) or plex.registry.engine is not Engine.DISTRIBUTION:
        return []
    check(plex)
    return [RenderedFile(DISTRIBUTION_CONFIG, render_yaml(distribution_config(plex)))]


def unit(plex: Plex) -> str:
    """The systemd unit serving the store (restarted after its htpasswd file is pushed)."""
    if plex.registry.engine is Engine.ZOT:
        return "zot.service"
    return f"plex-registry@{INSTANCE}.service"


def info(plex: Plex) -> dict[str, str] | None:
    """What `plex status` and `plex registry login` show about the store (no secret)."""
    if not enabled(plex):
        return None
    return {
        "endpoint": f"http://{host(plex)}",
        "host": host(plex),
        "push_prefix": prefix(plex),
        "user": plex.registry.store.user,
        "engine": plex.registry.engine.value,
    }


def auth_entry(user: str, password: str) -> dict[str, str]:
    """SECRET: one `auths` entry of a containers-auth.json / docker config.json file."""
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
