"""The node side: make every Kubernetes node pull its upstream images through the plex registry.

Nodes reach the registry by address (no DNS dependency) over plain http, which containerd only
uses when the endpoint says `http://` explicitly. The path layout follows the engine:
- zot serves every upstream from one port under its destination prefix, so the endpoint carries
  a path (`http://10.77.0.5:5000/v2/docker.io`); RKE2 turns an endpoint path other than `/v2`
  into `override_path = true` in the hosts.toml it generates (k3s
  pkg/agent/containerd/config.go, normalizeEndpointAddress);
- distribution serves each upstream at the root of its own port (`http://10.77.0.5:5001`).

The upstream itself stays the last resort: containerd falls back to the default endpoint
(`https://<name>/v2`, registry-1.docker.io for docker.io) when the mirror fails, and an upstream
whose URL is not that default is listed after the mirror explicitly.

Nothing here is secret: nodes pull from the plex registry anonymously; upstream logins live on
the registry node only.
"""

from __future__ import annotations

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
# Where RKE2 writes the containerd hosts files it generates from registries.yaml (k3s
# pkg/agent/containerd): what `ctr --hosts-dir` on a node must use to pull like the kubelet.
RKE2_CERTS_D = "/var/lib/rancher/rke2/agent/etc/containerd/certs.d"


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _address(plex: Plex) -> str:
    addr = registry_address(plex)
    if addr is None:
        raise UsageError(
            f"plex '{plex.name}' has no registry node", hint="add roles.registry to the plex file"
        )
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


def node_files(plex: Plex) -> list[RenderedFile]:
    """registries.yaml, read by RKE2 before its first start. RKE2 generates containerd's hosts
    files from it (under RKE2_CERTS_D) and never reads /etc/containerd/certs.d, so plex writes
    no hosts.toml of its own."""
    doc = registries_yaml(plex)
    if not doc:
        return []
    return [RenderedFile(REGISTRIES_YAML_PATH, yaml.safe_dump(doc, sort_keys=False))]
