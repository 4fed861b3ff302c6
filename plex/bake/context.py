"""The template context of a role: the plex, its nodes and the PUBLIC parts of its identity. Pure.

No secret is in it (private host keys, the join token, the VRRP password): nothing a template
renders can leak one into an image. They reach nodes at creation (Identity.private_files).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from plex.errors import ConfigError, ConfigErrors
from plex.lb import haproxy
from plex.model import topology
from plex.model.identity import Identity, hosts_file, known_hosts_file
from plex.model.plex import Engine, Plex, Role
from plex.plexfile import trust
from plex.registry import distribution, mirrors, store, zot


def template_context(plex: Plex, identity: Identity, role: Role) -> dict[str, Any]:
    all_nodes = topology.nodes(plex)
    # Per-node files are rendered for every reserved node of the role (its capacity), so a node
    # added within capacity finds its files in the image it already has.
    reserved = topology.nodes(plex, reserved=True)
    net = ipaddress.ip_network(plex.network.cidr, strict=False)
    api_name = topology.api_name(plex)
    ctx: dict[str, Any] = {
        "plex": plex,
        "role": role.value,
        "nodes": all_nodes,
        "role_nodes": [n for n in reserved if n.role is role],
        "servers": [n for n in all_nodes if n.role is Role.SERVER],
        "lbs": [n for n in all_nodes if n.role is Role.LB],
        "master": topology.master(plex),
        "registry_node": topology.registry_node(plex),
        "prefixlen": net.prefixlen,
        "haproxy_socket": haproxy.SOCKET,
        "api": {
            "name": api_name,
            "fqdn": f"{api_name}.{plex.network.domain}",
            "address": topology.api_address(plex),
        },
        "hosts_text": hosts_file(plex).rstrip("\n"),
        "known_hosts_text": known_hosts_file(plex, identity).rstrip("\n"),
        # The node's resolvers come from the plex, never from the build host (mmdebstrap copies
        # the host's resolv.conf): network.dns, else the gateway (Incus bridges answer there).
        "resolvers": list(
            plex.network.dns or ([plex.network.gateway] if plex.network.gateway else [])
        ),
    }
    ctx.update(_trust_context(plex))
    ctx.update(_registry_context(plex, role))
    return ctx


def _trust_context(plex: Plex) -> dict[str, Any]:
    """The plex's extra CAs (tls.ca_files) as trust-store files and containerd's bundle."""
    if not plex.tls.ca_files:
        return {"ca_certs": [], "ca_bundle": []}
    try:
        certs = trust.ca_certs(plex)
    except ValueError as e:
        where = plex.source or plex.name
        raise ConfigErrors([ConfigError(where, "tls.ca_files", str(e))]) from None
    return {
        "ca_certs": [{"file": c.file, "text": c.pem.rstrip("\n")} for c in certs],
        "ca_bundle": [
            {"file": trust.BUNDLE.rsplit("/", 1)[1], "text": trust.bundle(certs).rstrip("\n")}
        ],
    }


def _store_item(plex: Plex) -> list[dict[str, Any]]:
    """distribution: the CI store's own (non-proxy) instance, run by the same template unit."""
    if not store.enabled(plex):
        return []
    store.check(plex)
    return [
        {
            "file": f"{store.INSTANCE}.yml",
            "name": store.INSTANCE,
            "port": plex.registry.store.port,
            "config": store.distribution_config(plex),
            "unit": store.unit(plex),
        }
    ]


def _registry_context(plex: Plex, role: Role) -> dict[str, Any]:
    """Registry-related data, only for the roles that render it (keeps other digests stable)."""
    if role.is_kube:
        # Only registries.yaml: RKE2 generates containerd's hosts files from it.
        return {"registries_yaml": mirrors.registries_yaml(plex)}
    if role is Role.REGISTRY:
        if plex.registry.engine is Engine.ZOT:
            return {"zot_config": zot.zot_config(plex)}
        proxies = distribution.distribution_proxies(plex)
        return {
            "distribution_proxies": [
                {
                    "file": f"{p.upstream.name}.yml",
                    "name": p.upstream.name,
                    "port": p.port,
                    "config": p.config,
                    "unit": p.unit_name,
                }
                for p in proxies
            ]
            + _store_item(plex),
            **distribution.unit_vars(),
        }
    return {}
