"""Zot as a pull-through cache for every upstream of the plex, in one instance.

Each upstream syncs on demand into its own destination prefix (`/docker.io`, `/ghcr.io`...), so a
node pulls `docker.io/library/nginx` as `http://<registry>:5000/v2/docker.io/library/nginx/...`.
Zot refuses a config with a key its release does not know (viper UnmarshalExact), so keys that
appeared in later releases (`preserveDigest` in v2.1.3, `http.compat` in v2.1.2) are emitted only
for releases that have them, and every rendered config is checked against its release's key set
(plex.registry.zot_keys, data from zot's own structs per tag) before anyone writes it.

The config itself never holds a secret: upstream logins go to a separate credentials file
(`zot_credentials`), which is secret and written 0600.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from plex.errors import ConfigError
from plex.model.plex import Plex
from plex.registry import store, zot_keys
from plex.registry.base import RenderedFile
from plex.registry.credentials import Credentials

DEFAULT_VERSION = "v2.1.20"  # the newest release in plex/registry/zot_keys.json
CONFIG_PATH = "/etc/zot/config.json"
METRICS_PATH = "/metrics"
CREDENTIALS_PATH = "/etc/zot/credentials.json"
ROOT_DIRECTORY = "/var/lib/registry"
# Not zot-minimal: the minimal image has no sync extension.
IMAGE = "ghcr.io/project-zot/zot-linux-amd64"
# Retries cover an upstream hiccup during a pull; a lab node retries the pull itself anyway.
MAX_RETRIES = 3
RETRY_DELAY = "1m"
GC_DELAY = "1h"
# One path component of an OCI repository name (distribution-spec).
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*")


def image(plex: Plex) -> str:
    return f"{IMAGE}:{plex.registry.zot.version}"


def destination(plex: Plex, upstream_name: str) -> str:
    """The repository prefix (no slash) an upstream lives under in zot.

    Upstream names are registry hosts; a `host:port` name has a colon, which a repository name
    cannot hold, so it becomes a dash (`lab.internal:5000` -> `lab.internal-5000`).
    """
    prefix = upstream_name.lower().replace(":", "-")
    if not _COMPONENT_RE.fullmatch(prefix):
        names = [u.name for u in plex.registry.upstreams]
        i = names.index(upstream_name) if upstream_name in names else 0
        raise ConfigError(
            plex.source or "<plex>",
            f"registry.upstreams[{i}].name",
            f"'{upstream_name}' cannot be a zot repository prefix",
            hint="use the registry host name, e.g. docker.io or quay.io",
        )
    return prefix


def upstream_host(url: str) -> str:
    """`host[:port]` of an upstream URL: the key zot's credentials file uses."""
    return urlsplit(url).netloc


def _keys(plex: Plex) -> zot_keys.KeySet:
    try:
        return zot_keys.keys_for(plex.registry.zot.version)
    except ValueError as e:
        raise ConfigError(
            plex.source or "<plex>",
            "registry.zot.version",
            str(e),
            hint=f"use a release from {zot_keys.known_versions()[0]} on "
            f"(default {DEFAULT_VERSION})",
        ) from None


def _registry(
    plex: Plex, keys: zot_keys.KeySet, name: str, url: str, tls_verify: bool
) -> dict[str, Any]:
    reg: dict[str, Any] = {
        "urls": [url],
        "onDemand": True,
        "tlsVerify": tls_verify,
    }
    if keys.accepts("extensions.sync.registries[].preserveDigest"):
        # With http.compat docker2s2, keep Docker manifests as they are: converting them to OCI
        # changes their digests and breaks digest-pinned pulls. (v2.1.3 and later.)
        reg["preserveDigest"] = True
    reg.update(
        {
            "maxRetries": MAX_RETRIES,
            "retryDelay": RETRY_DELAY,
            "content": [{"prefix": "**", "destination": f"/{destination(plex, name)}"}],
        }
    )
    return reg


def zot_config(plex: Plex, credentials_path: str | None = CREDENTIALS_PATH) -> dict[str, Any]:
    """Zot's config.json for the plex: an on-demand pull-through cache of every upstream.

    `credentialsFile` is set only when the plex names a credentials file and `credentials_path`
    is not None; the file itself comes from `zot_credentials`.
    """
    reg = plex.registry
    keys = _keys(plex)
    sync: dict[str, Any] = {"enable": True}
    if reg.credentials_file is not None and credentials_path is not None:
        sync["credentialsFile"] = credentials_path
    sync["registries"] = [_registry(plex, keys, u.name, u.url, u.tls_verify) for u in reg.upstreams]
    http: dict[str, Any] = {
        "address": "0.0.0.0",  # noqa: S104 - nodes reach the registry over the plex network
        "port": str(reg.port),  # zot wants a string here
    }
    if keys.accepts("http.compat"):
        http["compat"] = ["docker2s2"]  # serve Docker manifests as they are (v2.1.2 and later)
    if store.enabled(plex):
        # A push namespace beside the mirror: anonymous reads stay for the mirrored content.
        store.check(plex)
        http.update(
            store.zot_http(plex, keys.accepts("http.accessControl.metrics.anonymousPolicy"))
        )
    doc = {
        "storage": {
            "rootDirectory": ROOT_DIRECTORY,
            # Upstreams share base layers; dedupe hard-links them once.
            "dedupe": True,
            "gc": True,
            "gcDelay": GC_DELAY,
        },
        "http": http,
        "log": {"level": "info"},
        "extensions": {
            "sync": sync,
            "metrics": {"enable": True, "prometheus": {"path": METRICS_PATH}},
        },
    }
    try:
        zot_keys.check_config(doc, reg.zot.version)
    except zot_keys.UnknownZotKeys as e:
        raise ConfigError(
            plex.source or "<plex>",
            "registry.zot.version",
            str(e),
            hint="plex rendered a key this zot release does not have",
        ) from None
    return doc


def zot_credentials(plex: Plex, credentials: Credentials) -> dict[str, dict[str, str]]:
    """SECRET: zot's credentials file, `{"host[:port]": {"username", "password"}}`.

    Write it 0600 and never log it. Entries are keyed by the upstream URL's host, which is how
    zot looks them up.
    """
    credentials.check_upstreams(plex)
    out: dict[str, dict[str, str]] = {}
    for u in plex.registry.upstreams:
        login = credentials.get(u.name)
        if login is not None:
            out[upstream_host(u.url)] = {
                "username": login.username,
                "password": login.password.reveal(),
            }
    return out


def render_json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def zot_files(plex: Plex, credentials: Credentials | None = None) -> list[RenderedFile]:
    """config.json, plus the 0600 credentials file when credentials are given."""
    # Without credentials the config must not point at a credentials file nobody writes.
    use_creds = credentials is not None and plex.registry.credentials_file is not None
    config = zot_config(plex, CREDENTIALS_PATH if use_creds else None)
    files = [RenderedFile(CONFIG_PATH, render_json(config))]
    if credentials is not None and use_creds:
        files.append(
            RenderedFile(
                CREDENTIALS_PATH,
                render_json(zot_credentials(plex, credentials)),
                mode=0o600,
                secret=True,
            )
        )
    return files
