"""What one node's Incus instance should look like: type, config keys, devices, profiles, member.

Pure apart from reading the role profiles in `deploy/profiles/<role>.yaml` (user-editable data:
`config:` and `devices:` for every virt, `container:` / `vm:` sections for one virt only).
The layers, later wins: role profile, the role's cpu/memory/disk, the role's `config:` from the
plex file (an empty value removes the key), then plex's ownership keys (`user.plex.*`), which a
user cannot override.

`user.plex.spec` is a digest of the spec without its ownership and volatile keys and without the
image (image drift is tracked separately by `user.plex.image`): the planner replaces a node when
either digest differs from what the running instance was created with.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plex.deploy.kured import server_manifests
from plex.errors import ConfigError
from plex.model import owner
from plex.model.image import ImageRef
from plex.model.plex import Engine, Plex, Role, Virt
from plex.model.profile_file import ProfileFile
from plex.model.topology import Node
from plex.plexfile.bootstrap import Manifest
from plex.plexfile.bootstrap import digest as bootstrap_digest
from plex.plexfile.home import project_root
from plex.plexfile.yamlfile import load_model
from plex.registry import distribution, zot

ROOT_DEVICE = "root"
NIC_DEVICE = "eth0"
CACHE_DEVICE = "registry-cache"


@dataclass(frozen=True)
class InstanceSpec:
    """Everything `create_instance` needs for one node. `config` includes the ownership keys."""

    name: str
    role: Role
    type: str  # Incus instance type: container or virtual-machine
    image: str  # fingerprint to create from (exact, not the moving alias)
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    profiles: tuple[str, ...]
    target: str | None  # cluster member (None: Incus places it)
    digest: str  # equals config[user.plex.spec]
    # Files pushed into the instance before its first start (servers: bootstrap manifests).
    manifests: tuple[Manifest, ...] = ()
    # The digest this spec had before plex set precomputed MACs (the NIC without `hwaddr`): a
    # node made then differs only by its MAC, which alone does not replace a healthy node.
    digest_before_mac: str = ""


# --------------------------------------------------------------------------------------------
# Role profiles (deploy/profiles/<role>.yaml)


def _incus_value(v: str | bool | int | float) -> str:
    # Incus config values are strings; YAML users naturally write `true` and `2`.
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass(frozen=True)
class RoleProfile:
    """A role's instance defaults for one virt, already merged and stringified."""

    config: dict[str, str]
    devices: dict[str, dict[str, str]]


def profiles_dir() -> Path:
    """deploy/profiles of the project root (plex.plexfile.home)."""
    return project_root() / "deploy" / "profiles"


def load_profile(role: Role, virt: Virt, directory: Path | None = None) -> RoleProfile:
    path = (directory or profiles_dir()) / f"{role.value}.yaml"
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(
            str(path),
            "",
            "missing role profile",
            hint="every role needs deploy/profiles/<role>.yaml (an empty file is fine)",
        ) from None
    parsed = _parse_profile(str(path), stamp)
    layer = parsed.vm if virt is Virt.VM else parsed.container
    config = {k: _incus_value(v) for k, v in {**parsed.config, **layer.config}.items()}
    devices: dict[str, dict[str, str]] = {}
    for name, dev in {**parsed.devices, **layer.devices}.items():
        devices[name] = {k: _incus_value(v) for k, v in dev.items()}
    return RoleProfile(config=config, devices=devices)


@functools.lru_cache(maxsize=64)
def _parse_profile(path: str, mtime_ns: int) -> ProfileFile:
    # Cached by modification time: every plan reads every role's file, and YAML parsing is
    # most of a plan's cost; an edited file has a new mtime and is read again.
    del mtime_ns
    return load_model(Path(path), ProfileFile, "role profile")[0]


# --------------------------------------------------------------------------------------------
# The spec


def _is_unhashed(key: str) -> bool:
    # Ownership keys describe the instance, volatile keys are Incus's own bookkeeping.
    return key.startswith((owner.PREFIX, "volatile."))


def spec_digest(
    type_: str,
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    profiles: tuple[str, ...],
    target: str | None,
    bootstrap: str | None = None,
) -> str:
    spec: dict[str, Any] = {
        "type": type_,
        "config": {k: v for k, v in config.items() if not _is_unhashed(k)},
        "devices": devices,
        "profiles": list(profiles),
        "target": target,
    }
    if bootstrap:
        # Only when there are manifests: plexes without any keep their digests.
        spec["bootstrap"] = bootstrap
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def registry_cache_path(plex: Plex) -> str:
    """Where the cache volume is mounted: the engine's own data root. The custom volume
    outlives node replacements, so a new registry node starts warm."""
    if plex.registry.engine is Engine.ZOT:
        return zot.ROOT_DIRECTORY
    return distribution.ROOT_DIRECTORY


def registry_volume(plex: Plex) -> str:
    """The custom volume holding the registry cache (deploy creates it with the cache size)."""
    return f"{plex.name}-registry-cache"


def _devices(plex: Plex, node: Node, profile: RoleProfile) -> dict[str, dict[str, str]]:
    rc = plex.roles.get(node.role)
    assert rc is not None, f"node {node.name} has no role config"
    nic = {
        "type": "nic",
        "network": plex.incus.network,
        # A DHCP reservation on a managed bridge; with static addressing the image also writes
        # it inside the node, and the reservation keeps Incus from handing it to anyone else.
        "ipv4.address": node.address,
        # The precomputed MAC: the node's network config matches it (eth0 vs enp5s0).
        "hwaddr": node.mac,
        # security.ipv4_filtering stays off (the default): it would drop the keepalived VIP.
    }
    if plex.incus.network_type == "macvlan":
        # Incus refuses ipv4.address on a macvlan NIC: the address lives only in the node.
        del nic["ipv4.address"]
    if node.virt is Virt.CONTAINER:
        nic["name"] = plex.network.interface
    devices = dict(profile.devices)
    devices[ROOT_DEVICE] = {"type": "disk", "path": "/", "pool": plex.incus.pool, "size": rc.disk}
    devices[NIC_DEVICE] = nic
    if node.role is Role.REGISTRY:
        devices[CACHE_DEVICE] = {
            "type": "disk",
            "pool": plex.incus.pool,
            "source": registry_volume(plex),
            "path": registry_cache_path(plex),
        }
    return devices


def instance_spec(
    plex: Plex, node: Node, image: ImageRef, profile: RoleProfile | None = None
) -> InstanceSpec:
    """The instance for `node` created from `image`. `profile` defaults to the role's file."""
    rc = plex.roles.get(node.role)
    assert rc is not None, f"node {node.name} has no role config"
    if profile is None:
        profile = load_profile(node.role, node.virt)
    config = {
        **profile.config,
        "limits.cpu": str(rc.cpu),
        "limits.memory": rc.memory,
        **rc.config,
    }
    # An empty value removes a profile key (Incus reads "" as unset anyway): how a plex file
    # drops, say, linux.kernel_modules on a host whose kernel has them built in.
    config = {k: v for k, v in config.items() if v != "" and not k.startswith(owner.PREFIX)}
    devices = _devices(plex, node, profile)
    profiles = tuple(dict.fromkeys(("default", *rc.profiles)))
    manifests = tuple(server_manifests(plex)) if node.role is Role.SERVER else ()
    bootstrap = bootstrap_digest(list(manifests)) if manifests else None
    digest = spec_digest(node.virt.incus_type, config, devices, profiles, node.member, bootstrap)
    nic = {k: v for k, v in devices[NIC_DEVICE].items() if k != "hwaddr"}
    before_mac = spec_digest(
        node.virt.incus_type, config, {**devices, NIC_DEVICE: nic}, profiles, node.member, bootstrap
    )
    config.update(
        {
            owner.PLEX: plex.name,
            owner.ROLE: node.role.value,
            owner.NODE: node.name,
            owner.IMAGE: image.digest,
            owner.SPEC: digest,
        }
    )
    return InstanceSpec(
        name=node.name,
        role=node.role,
        type=node.virt.incus_type,
        image=image.fingerprint,
        config=config,
        devices=devices,
        profiles=profiles,
        target=node.member,
        digest=digest,
        manifests=manifests,
        digest_before_mac=before_mac,
    )
