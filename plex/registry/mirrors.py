"""The node side: make every Kubernetes node pull its upstream images through the plex registry.

Nodes reach the registry by address (no DNS dependency) over plain http, which containerd only
uses when the endpoint says `http://` explicitly. The path layout follows the engine:
- zot serves every upstream from one port under its destination prefix, so the endpoint carries
  a path (`http://10.77.0.5:5000/v2/docker.io`); RKE2 turns an endpoint path other than `/v2`
  into `override_path = true` in the hosts.toml it generates (k3s
  pkg/agent/containerd/config.go, normalizeEndpointAddress), and so do we below;
- distribution serves each upstream at the root of its own port (`http://10.77.0.5:5001`).

The upstream itself stays the last resort: containerd falls back to the default endpoint
(`https://<name>/v2`, registry-1.docker.io for docker.io) when the mirror fails, and an upstream
whose URL is not that default is listed after the mirror explicitly.

Nothing here is secret: nodes pull from the plex registry anonymously; upstream logins live on
the registry node only.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import yaml

from plex.errors import UsageError
from plex.model.plex import Engine, Plex, Upstream
from plex.plexfile.trust import BUNDLE
from plex.registry.base import RenderedFile, registry_address, upstream
from plex.registry.distribution import port_of
from plex.registry.zot import destination

REGISTRIES_YAML_PATH = "/etc/rancher/rke2/registries.yaml"
CERTS_D = "/etc/containerd/certs.d"
CAPABILITIES = ("pull", "resolve")


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _address(plex: Plex) -> str:
    addr = registry_address(plex)
    if addr is None:
        raise UsageError(f"plex '{plex.name}' has no registry node",
                         hint="add roles.registry to the plex file")
    return addr


def mirror_url(plex: Plex, upstream_name: str) -> str:
    """The endpoint a node pulls `upstream_name` images from, as registries.yaml lists it."""
    addr = _address(plex)
    upstream(plex, upstream_name)  # UsageError for an unknown upstream
    if plex.registry.engine is Engine.ZOT:
        hp = _hostport(addr, plex.registry.port)
        return f"http://{hp}/v2/{destination(plex, upstream_name)}"
    return f"http://{_hostport(addr, port_of(plex, upstream_name))}"


def _default_endpoint(name: str) -> str:
    """Where containerd pulls `name` images without any mirror (its implicit fallback)."""
    return "https://registry-1.docker.io" if name == "docker.io" else f"https://{name}"


def _is_default(u: Upstream) -> bool:
    return u.url.rstrip("/").removesuffix("/v2") == _default_endpoint(u.name)


def _skips_tls(u: Upstream) -> bool:
    return u.url.startswith("https://") and not u.tls_verify


def registries_yaml(plex: Plex) -> dict[str, Any]:
    """RKE2's /etc/rancher/rke2/registries.yaml; empty without a registry node."""
    if registry_address(plex) is None:
        return {}
    mirrors: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for u in plex.registry.upstreams:
        endpoints = [mirror_url(plex, u.name)]
        if not _is_default(u):
            endpoints.append(u.url)
        mirrors[u.name] = {"endpoint": endpoints}
        tls = _upstream_tls(plex, u)
        if tls:
            configs[urlsplit(u.url).netloc] = {"tls": tls}
    doc: dict[str, Any] = {"mirrors": mirrors}
    if configs:
        doc["configs"] = configs
    return doc


def _upstream_tls(plex: Plex, u: Upstream) -> dict[str, Any]:
    """registries.yaml `configs.<host>.tls` for the fallback to an https upstream: the plex's
    tls_verify and its extra CAs (tls.ca_files, one bundle) follow the nodes there too."""
    if not u.url.startswith("https://"):
        return {}
    if _skips_tls(u):
        return {"insecure_skip_verify": True}
    if plex.tls.ca_files:
        return {"ca_file": BUNDLE}
    return {}


def _toml_str(s: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(s)


def _hosts_toml(plex: Plex, u: Upstream) -> str:
    mirror = mirror_url(plex, u.name)
    lines = [
        f"# Rendered by plex for plex '{plex.name}': pull {u.name} through the plex registry.",
        f"server = {_toml_str(u.url)}",
    ]
    if _skips_tls(u):
        lines.append("skip_verify = true")
    elif _upstream_tls(plex, u):
        lines.append(f"ca = {_toml_str(BUNDLE)}")
    lines += [
        "",
        f"[host.{_toml_str(mirror)}]",
        "  capabilities = [" + ", ".join(_toml_str(c) for c in CAPABILITIES) + "]",
    ]
    if urlsplit(mirror).path not in ("", "/", "/v2"):
        # The mirror path replaces /v2 instead of being prefixed to it.
        lines.append("  override_path = true")
    return "\n".join(lines) + "\n"


def hosts_toml(plex: Plex) -> dict[str, str]:
    """`<upstream name>` -> text of containerd's certs.d/<name>/hosts.toml; empty without a
    registry node."""
    if registry_address(plex) is None:
        return {}
    return {u.name: _hosts_toml(plex, u) for u in plex.registry.upstreams}


def node_files(plex: Plex) -> list[RenderedFile]:
    """registries.yaml (read by RKE2 before its first start) and containerd hosts.toml files
    (for plain containerd and `ctr --hosts-dir`, e.g. while baking)."""
    doc = registries_yaml(plex)
    if not doc:
        return []
    files = [RenderedFile(REGISTRIES_YAML_PATH, yaml.safe_dump(doc, sort_keys=False))]
    files += [RenderedFile(f"{CERTS_D}/{name}/hosts.toml", text)
              for name, text in hosts_toml(plex).items()]
    return files
