"""What a VM node gets through Incus's cloud-init keys, where no incus-agent runs. Pure.

A MicroOS VM image has no incus-agent, so the Incus file API (and `incus exec`) cannot reach it:
its per-node data goes through `cloud-init.user-data` and `cloud-init.network-config` (Incus
doc/cloud-init.md), read by cloud-init on first boot (the image is `cloud-init clean`ed):

- user-data (#cloud-config): hostname and FQDN; the node's precomputed SSH host keys as
  cloud-init's `ssh_keys` (`<type>_private` / `<type>_public`), with `ssh_deletekeys: false`
  and only those key types (none left to generate); every other private file of the node
  (node password, join token, VRRP password) as `write_files` with its mode, root-owned;
  the plex's deploy key (public half) as root's authorized key, for the SSH probes.
- network-config (v2): the NIC matched by the node's precomputed MAC (VM NICs are named
  `enp5s0`-style) and renamed to the plex's interface name, static or DHCP like the
  containers' systemd-networkd file. Checked with cloud-init's own parser and renderer.

`tests/unit/test_cloudinit.py` checks every VM node's user-data with the real `cloud-init
schema`. The values are secrets: they are handed to Incus at creation and never printed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import yaml

from plex.model.identity import KEY_TYPES, Identity, PrivateFile
from plex.model.plex import Plex
from plex.model.topology import Node

USER_DATA = "cloud-init.user-data"
NETWORK_CONFIG = "cloud-init.network-config"


def user_data(plex: Plex, identity: Identity, node: Node, extra: Sequence[PrivateFile] = ()) -> str:
    """`extra`: more root-owned files for first boot (a server's bootstrap manifests, a
    joining master's drop-in), which a VM cannot get by file push."""
    identity.require_secrets()
    keys = identity.host_keys(node.name)
    ssh_keys: dict[str, str] = {}
    for kind in KEY_TYPES:
        ssh_keys[f"{kind}_private"] = keys[kind].private
        ssh_keys[f"{kind}_public"] = keys[kind].public_key
    files = [
        {
            "path": f.path,
            "content": f.data.decode(),
            "permissions": f"{f.mode:04o}",
            "owner": "root:root",
        }
        for f in (*identity.private_files(node.name, node.role), *extra)
        if not f.path.startswith("/etc/ssh/ssh_host_")  # delivered as ssh_keys
    ]
    doc: dict[str, Any] = {
        "hostname": node.name,
        "fqdn": node.fqdn(plex.network.domain),
        "prefer_fqdn_over_hostname": False,
        "manage_etc_hosts": False,  # the image carries the plex's /etc/hosts
        "ssh_deletekeys": False,
        # Only types whose key file is missing are generated: both come from ssh_keys. (The
        # schema refuses an empty list.)
        "ssh_genkeytypes": list(KEY_TYPES),
        "ssh_keys": ssh_keys,
        "write_files": files,
    }
    if identity.deploy_key is not None:
        # plex's SSH probes log in as root with the plex's deploy key (its public half only).
        # disable_root false: cloud-init's default turns root's keys into a "log in as the
        # default user" message (cloudinit/config/cc_ssh.py).
        doc["disable_root"] = False
        doc["users"] = [
            {
                "name": "root",
                "lock_passwd": True,
                "ssh_authorized_keys": [identity.deploy_key.public],
            }
        ]
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)


def network_config(plex: Plex, node: Node) -> str:
    net = ipaddress.ip_network(plex.network.cidr, strict=False)
    # Matched by MAC and renamed to the plex's interface name (eth0 by default): the name a
    # container's NIC gets from Incus, so keepalived's `interface` is right on both.
    iface = plex.network.interface
    eth: dict[str, Any] = {"match": {"macaddress": node.mac}, "set-name": iface}
    if plex.network.addressing == "static":
        eth["addresses"] = [f"{node.address}/{net.prefixlen}"]
        if plex.network.gateway:
            # 0.0.0.0/0, not `default`: cloud-init before 23.x refuses "default" ("Address
            # default is not a valid ip address", network_state._normalize_route, 22.4.2).
            eth["routes"] = [{"to": "0.0.0.0/0", "via": plex.network.gateway}]
        if plex.network.dns:
            eth["nameservers"] = {
                "addresses": list(plex.network.dns),
                "search": [plex.network.domain],
            }
    else:
        eth["dhcp4"] = True
    doc = {"version": 2, "ethernets": {iface: eth}}
    return yaml.safe_dump(doc, sort_keys=False)


def cloud_init_config(
    plex: Plex, identity: Identity, node: Node, extra: Sequence[PrivateFile] = ()
) -> dict[str, str]:
    """The Incus instance keys for a VM node (secret: pass them to Incus, never print them)."""
    return {
        USER_DATA: user_data(plex, identity, node, extra),
        NETWORK_CONFIG: network_config(plex, node),
    }
