"""A frozen snapshot of what Incus holds for a plex: the planner's only view of the world.

Built by the Incus backend (`observe()`), or loaded from JSON in unit tests, so planning runs
without a daemon and never triggers a hidden API call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from plex.model import owner

EVACUATED = "Evacuated"  # an Incus cluster member's status


class OwnerKey:
    """One `user.plex.*` key of an instance's config, read as an attribute (None when unset)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, instance: ObservedInstance, objtype: type | None = None) -> str | None:
        return instance.config.get(self.key)


@dataclass(frozen=True)
class ObservedInstance:
    name: str
    status: str  # Running, Stopped, ...
    uuid: str
    config: dict[str, str] = field(default_factory=dict)  # only user.plex.* keys
    location: str | None = None
    type: str = "container"

    plex = OwnerKey(owner.PLEX)
    role = OwnerKey(owner.ROLE)
    image = OwnerKey(owner.IMAGE)  # the image digest it was created from
    spec = OwnerKey(owner.SPEC)
    build = OwnerKey(owner.BUILD)  # set on bake instances only

    @property
    def running(self) -> bool:
        return self.status == "Running"

    @property
    def node(self) -> str:
        """The plex node this instance is: its name, unless it was evacuated under another."""
        return self.config.get(owner.NODE) or self.name


@dataclass(frozen=True)
class Observed:
    """What plex owns in the plex's project, by instance name."""

    plex: str
    project: str
    instances: dict[str, ObservedInstance] = field(default_factory=dict)
    # Image aliases visible in the project: alias -> fingerprint.
    aliases: dict[str, str] = field(default_factory=dict)
    # Cluster members and why any is unusable: member -> "" (online) or the reason (status and
    # Incus's message, e.g. "Offline: No heartbeat since 31s"). Empty when not clustered.
    members: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def unreachable(self, inst: ObservedInstance) -> str | None:
        """Why plex cannot reach `inst` (its member is down), or None. An evacuated member
        (`incus cluster evacuate`, or Incus's healing of a dead one) may answer: its instances
        can be deleted, only nothing new is placed there. Incus reports a dead member that was
        healed as Evacuated too (that state wins over Offline), so what tells them apart is
        the instance: Incus lists one it cannot reach as `Error`, without its config."""
        why = self.members.get(inst.location or "")
        if why and (not why.startswith(EVACUATED) or inst.status == "Error"):
            return f"member {inst.location} is {why}"
        return None

    def unusable(self, inst: ObservedInstance) -> str | None:
        """Why nothing but deletion can be done with `inst`: its member is down or evacuated."""
        why = self.members.get(inst.location or "")
        return f"member {inst.location} is {why}" if why else None

    @property
    def online_members(self) -> tuple[str, ...]:
        return tuple(m for m, why in self.members.items() if not why)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observed:
        return cls(
            plex=data["plex"],
            project=data["project"],
            instances={k: ObservedInstance(**v) for k, v in data.get("instances", {}).items()},
            aliases=dict(data.get("aliases", {})),
            members=dict(data.get("members", {})),
        )


def owned(config: dict[str, str], plex: str) -> bool:
    return config.get(owner.PLEX) == plex
