"""The nodes a plex declares: names, roles, addresses and placement. Pure.

Names are `<plex>-<role><n>` (1-based); the first server is the master, and `master` is accepted
wherever a node name is. Addresses follow Terraform's `cidrhost(cidr, offset + i)`.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from plex.errors import UsageError
from plex.model.plex import Plex, Role, Virt

MASTER = "master"


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    index: int  # 1-based within the role
    address: str
    member: str | None  # Incus cluster member to place it on (None: let Incus choose)
    virt: Virt
    base: str

    @property
    def is_master(self) -> bool:
        return self.role is Role.SERVER and self.index == 1

    def fqdn(self, domain: str) -> str:
        return f"{self.name}.{domain}"

    @property
    def mac(self) -> str:
        """The node's precomputed MAC (set as the Incus NIC's `hwaddr`): NIC names differ between
        containers (`eth0`) and VMs (`enp5s0`), so the network config matches this instead.
        Locally administered unicast (02:...), stable for the node's name (which carries the
        plex's), so a replaced node comes back with the same one."""
        digest = hashlib.sha256(f"plex-mac:{self.name}".encode()).digest()
        return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def cidrhost(cidr: str, hostnum: int) -> str:
    """Terraform's cidrhost: the hostnum-th address of the network (negative: from the end)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if hostnum < 0:
        hostnum += net.num_addresses
    if not 0 <= hostnum < net.num_addresses:
        raise ValueError(f"host number {hostnum} is outside {cidr}")
    return str(net.network_address + hostnum)


def role_members(plex: Plex, role: Role) -> tuple[str, ...]:
    rc = plex.roles.get(role)
    if rc is not None and rc.placement:
        return rc.placement
    return plex.incus.members


def nodes(plex: Plex, reserved: bool = False) -> list[Node]:
    """Every node of the plex, in wave order (registry, lb, servers with master first, agents).

    `reserved`: every node of each role's capacity, deployed or not, as identity and images
    know them (the first `count` of each role are the deployed ones)."""
    out: list[Node] = []
    for role, rc in plex.roles.items():
        members = role_members(plex, role)
        os_ = plex.os_for(role)
        for i in range(rc.reserved if reserved else rc.count):
            out.append(
                Node(
                    name=f"{plex.name}-{role.value}{i + 1}",
                    role=role,
                    index=i + 1,
                    address=cidrhost(plex.network.cidr, rc.offset + i),
                    # Round-robin over the members; a placement list as long as the role pins
                    # node i to member i, which is the same rule.
                    member=members[i % len(members)] if members else None,
                    virt=os_.virt,
                    base=os_.base,
                )
            )
    return out


def master(plex: Plex) -> Node:
    for n in nodes(plex):
        if n.is_master:
            return n
    raise UsageError(f"plex '{plex.name}' has no server node")


def resolve(plex: Plex, name: str) -> Node:
    """A node by name; `master` means the first server. Short names (`server1`) are accepted."""
    all_nodes = nodes(plex)
    if name == MASTER:
        return master(plex)
    for n in all_nodes:
        if name in (n.name, n.name.removeprefix(f"{plex.name}-")):
            return n
    raise UsageError(
        f"plex '{plex.name}' has no node '{name}'",
        hint="nodes: " + ", ".join(["master", *(n.name for n in all_nodes)]),
    )


def api_name(plex: Plex) -> str:
    """The DNS name of the API virtual IP (or the master when there is no VIP)."""
    return f"{plex.name}-api"


def api_address(plex: Plex) -> str:
    return plex.network.vip or master(plex).address


def registry_node(plex: Plex) -> Node | None:
    for n in nodes(plex):
        if n.role is Role.REGISTRY:
            return n
    return None
