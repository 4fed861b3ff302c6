"""The fixed sets of a plex definition, as enums. Stdlib only: the CLI types its options with
them without importing pydantic (start-up time, bench/cli.py)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """Node roles, in the order their waves deploy."""

    REGISTRY = "registry"
    LB = "lb"
    SERVER = "server"
    AGENT = "agent"

    @property
    def is_kube(self) -> bool:
        return self in (Role.SERVER, Role.AGENT)


class Virt(StrEnum):
    """How a node runs: a system container, or a VM (MicroOS, baked with Packer)."""

    CONTAINER = "container"
    VM = "vm"

    @property
    def incus_type(self) -> str:
        return "virtual-machine" if self is Virt.VM else "container"


class Addressing(StrEnum):
    """How a node gets its precomputed address."""

    STATIC = "static"  # plex writes the address into the node (works on any network)
    DHCP = "dhcp"  # an Incus managed-bridge DHCP reservation of the same precomputed address


class VrrpMode(StrEnum):
    """How keepalived on the lb nodes sends VRRP adverts."""

    MULTICAST = "multicast"  # keepalived's default: adverts to 224.0.0.18
    UNICAST = "unicast"  # unicast_peer lists, for networks that drop multicast (macvlan, clouds)


class Engine(StrEnum):
    """The registry node's pull-through cache: Zot, or CNCF Distribution."""

    ZOT = "zot"
    DISTRIBUTION = "distribution"


class Runtime(StrEnum):
    """Where the registry runs: an Incus node of the plex, or a Docker container."""

    INCUS = "incus"  # a node of the plex, baked and deployed like the others
    DOCKER = "docker"  # containers on a Docker engine (host networking, a named cache volume)


class Cni(StrEnum):
    """RKE2's `cni:` choices."""

    CANAL = "canal"
    CILIUM = "cilium"
    CALICO = "calico"
    FLANNEL = "flannel"
    NONE = "none"
