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
    CONTAINER = "container"
    VM = "vm"

    @property
    def incus_type(self) -> str:
        return "virtual-machine" if self is Virt.VM else "container"


class Addressing(StrEnum):
    STATIC = "static"  # plex writes the address into the node (works on any network)
    DHCP = "dhcp"  # an Incus managed-bridge DHCP reservation of the same precomputed address


class VrrpMode(StrEnum):
    MULTICAST = "multicast"
    UNICAST = "unicast"


class Engine(StrEnum):
    ZOT = "zot"
    DISTRIBUTION = "distribution"


class Runtime(StrEnum):
    INCUS = "incus"
    DOCKER = "docker"


class Cni(StrEnum):
    CANAL = "canal"
    CILIUM = "cilium"
    CALICO = "calico"
    FLANNEL = "flannel"
    NONE = "none"
