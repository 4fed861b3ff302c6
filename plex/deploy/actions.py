"""What a deploy plan is made of: verbs, one node's action, the plan with its waves, the
strategy and the reasons `plex plan` shows. Pure data; plex.deploy.plan makes them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypedDict

from plex.deploy.copies import StaleCopy
from plex.deploy.spec import InstanceSpec
from plex.model import owner
from plex.model.observed import Observed, ObservedInstance
from plex.model.plex import Role

ALL = "all"

# Reasons, in the order they are listed when several apply.
FORCED = "forced"
NOT_RUNNING = "not running"
STOPPED = "stopped"  # not running but otherwise current: started, not rebuilt
# Created but never passed its probes: a deploy was interrupted (SIGKILL) or failed on it.
UNFINISHED = "unfinished deploy"
IMAGE_CHANGED = "image changed"
SPEC_CHANGED = "spec changed"
ROLE_CHANGED = "role changed"
MISSING = "missing"
ORPHAN = "not in the plex file"
UNREACHABLE = "unreachable"
EVACUATED = "evacuated"


def cascade_reason(root: str) -> str:
    return f"cascade from {root}"


class Strategy(StrEnum):
    NONE = "none"  # nothing to do
    ROLLING = "rolling"  # the cluster stays: one server at a time, agents in batches
    CASCADE = "cascade"  # a new cluster from a new master


class PlanOptions(TypedDict, total=False):
    """What the user asks of a plan beyond the plex file (plex plan, deploy, reset), passed on
    unchanged by the layers above to plex.deploy.plan.make_plan, which documents each."""

    replace: Sequence[str]  # nodes to re-create even when current (ALL: every node)
    force: bool  # past the quorum guard
    max_unavailable: int | None  # agents replaced at once in a rolling plan
    evacuate: bool  # re-create the nodes of a member that is down on online members


def default_max_unavailable(agents: int) -> int:
    """Kubernetes' rolling-update default: 25% of the agents (at least one)."""
    return max(1, agents // 4)


class Verb(StrEnum):
    CREATE = "create"
    REPLACE = "replace"
    START = "start"
    DELETE = "delete"
    KEEP = "keep"

    @property
    def symbol(self) -> str:
        return {"create": "+", "replace": "-/+", "start": ">", "delete": "-", "keep": "="}[
            self.value
        ]

    @property
    def changes(self) -> bool:
        return self is not Verb.KEEP


@dataclass(frozen=True)
class Action:
    """One node's fate. `spec` is what to create (create/replace) or what is current (keep)."""

    verb: Verb
    node: str
    role: Role | None  # None for an orphan whose role key is unknown
    reasons: tuple[str, ...] = ()
    spec: InstanceSpec | None = None
    # Drain the node (kubectl drain, then delete the Kubernetes node) before deleting it: set
    # for kube nodes leaving a live cluster that survives the plan.
    drain: bool = False
    # Delete its Node from the live cluster before it is replaced (`kubectl delete node`, which
    # also drops a server's etcd member): set for kube nodes that are not running, so cannot
    # be drained. A node missing from Incus is not forgotten: it rejoins under its name.
    forget: bool = False
    generation: int = 0  # user.plex.generation after the action (apply writes it)
    cascade_from: str | None = None  # the master whose replacement rebuilds the cluster
    # A (re)created master that joins the running cluster through the VIP instead of
    # bootstrapping a new one (rolling); for a started master: how to replace it if it fails.
    join: bool = False
    # The node's current instance when it is not named after the node (an evacuated copy).
    instance: str = ""
    # Re-placed off this member, which is down: its copy there is left (Incus refuses to touch
    # it) and removed as a stale copy once the member is back (plex.deploy.copies).
    evacuate_from: str | None = None

    @property
    def reason(self) -> str:
        return ", ".join(self.reasons)

    @property
    def created(self) -> str:
        """The instance the node has after the action."""
        return self.spec.name if self.spec else (self.instance or self.node)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "role": self.role.value if self.role else None,
            "action": self.verb.value,
            "reason": self.reason,
            "drain": self.drain,
            "forget": self.forget,
            "generation": self.generation,
            "cascade_from": self.cascade_from,
            "join": self.join,
            "image": self.spec.config[owner.IMAGE] if self.spec else None,
            "spec": self.spec.digest if self.spec else None,
            "target": self.spec.target if self.spec else None,
            # Only for a node whose instance is not named after it (plex.deploy.copies).
            **({"instance": self.created} if self.created != self.node else {}),
            **({"evacuate_from": self.evacuate_from} if self.evacuate_from else {}),
        }


@dataclass(frozen=True)
class Plan:
    plex: str
    project: str
    actions: tuple[Action, ...]  # every node in wave order, then orphans
    waves: tuple[tuple[Action, ...], ...]  # changing actions only; a wave runs in parallel
    # node -> the nodes of earlier waves it waits for (apply starts it once they are done);
    # a node missing here waits for every earlier wave.
    after: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    cascade_from: str | None = None
    notes: tuple[str, ...] = ()  # warnings worth showing (forced quorum loss, broken etcd)
    unreachable: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> why
    strategy: Strategy = Strategy.NONE
    why: str = ""  # why this strategy, in words
    stale: tuple[StaleCopy, ...] = ()  # deleted before the first wave

    @property
    def empty(self) -> bool:
        return not self.waves and not self.stale

    def count(self, verb: Verb) -> int:
        return sum(1 for a in self.actions if a.verb is verb)

    def action(self, node: str) -> Action:
        for a in self.actions:
            if a.node == node:
                return a
        raise KeyError(node)

    def to_json(self) -> dict[str, Any]:
        return {
            "plex": self.plex,
            "project": self.project,
            "empty": self.empty,
            "cascade_from": self.cascade_from,
            "strategy": self.strategy.value,
            "why": self.why,
            "summary": {v.value: self.count(v) for v in Verb},
            "actions": [a.to_json() for a in self.actions],
            "waves": [[a.node for a in wave] for wave in self.waves],
            "notes": list(self.notes),
            # Only on a cluster with a member down (keeps the plans of healthy plexes as they were).
            **({"unreachable": dict(self.unreachable)} if self.unreachable else {}),
            **({"stale": [c.to_json() for c in self.stale]} if self.stale else {}),
        }

    def render_rows(self) -> list[tuple[str, str, str, str]]:
        """(symbol, node, action, reason) rows, like `terraform plan`."""
        rows = [
            (Verb.DELETE.symbol, c.instance, "delete (stale copy)", c.reason) for c in self.stale
        ]
        for a in self.actions:
            verb = a.verb.value + (" (drain)" if a.drain else "") + (" (join)" if a.join else "")
            verb += f" (evacuate to {a.spec.target})" if a.evacuate_from and a.spec else ""
            rows.append((a.verb.symbol, a.node, verb, a.reason))
        return rows


def simulate_apply(plan: Plan, observed: Observed) -> Observed:
    """What Incus holds after `plan` applied successfully: the planner's own round-trip check."""
    instances = dict(observed.instances)
    for c in plan.stale:
        instances.pop(c.instance, None)
    for a in plan.actions:
        old = a.instance or a.node
        if a.verb is Verb.DELETE:
            instances.pop(old, None)
        elif a.verb is Verb.START:
            instances[old] = dataclasses.replace(instances[old], status="Running")
        elif a.verb in (Verb.CREATE, Verb.REPLACE):
            assert a.spec is not None
            if not a.evacuate_from:  # an evacuated node's lost copy stays until its member is back
                instances.pop(old, None)
            config = {k: v for k, v in a.spec.config.items() if k.startswith(owner.PREFIX)}
            config[owner.GENERATION] = str(a.generation)
            config[owner.READY] = "true"  # apply marks a node ready once its probes pass
            instances[a.spec.name] = ObservedInstance(
                name=a.spec.name,
                status="Running",
                uuid=f"simulated-{a.spec.name}-{a.generation}",
                config=config,
                location=a.spec.target,
                type=a.spec.type,
            )
    return dataclasses.replace(observed, instances=instances)
