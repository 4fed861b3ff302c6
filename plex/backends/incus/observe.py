"""Read-only views: a plex's instances and aliases (Observed), its build instances, the
neighbours on a network (every project), and the cluster's members."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from plex.backends.incus.rest import IncusRest
from plex.errors import BackendError
from plex.model import owner
from plex.model.observed import Observed, ObservedInstance, owned
from plex.plexfile.crosscheck import Neighbour


def _observed(inst: dict[str, Any]) -> ObservedInstance:
    """The snapshot of one instance: only plex's own config keys, never a lazy API object."""
    config = inst.get("config") or {}
    return ObservedInstance(
        name=inst["name"],
        status=inst.get("status", "Unknown"),
        uuid=config.get("volatile.uuid", ""),
        config={k: v for k, v in config.items() if k.startswith(owner.PREFIX)},
        location=inst.get("location") or None,
        type=inst.get("type", "container"),
    )


def _addresses(inst: dict[str, Any], nics: list[dict[str, str]]) -> tuple[str, ...]:
    """The NICs' configured IPv4 addresses and the instance's live global ones."""
    addrs = {d["ipv4.address"] for d in nics if d.get("ipv4.address")}
    for iface in ((inst.get("state") or {}).get("network") or {}).values():
        addrs |= {
            a["address"]
            for a in iface.get("addresses") or []
            if a.get("family") == "inet" and a.get("scope") == "global"
        }
    return tuple(sorted(addrs))


# What incusd keeps doing after its client went away (a plex killed mid-deploy): an
# operation changing an instance runs to its end. Commands run in an instance change none.
OPERATIONS_WAIT = 300.0  # seconds; an instance create from a large image takes a minute
OPERATIONS_POLL = 0.5
NOT_A_CHANGE = frozenset({"Executing command"})  # incus operationtype CommandExec


def instance_changes(operations: dict[str, Any] | None, plex: str) -> list[str]:
    """`<description> <instance>` for each running operation that changes one of `plex`'s
    instances (named `<plex>-...`), from Incus's operation list (recursion=1: the
    operations by status)."""
    out = []
    for op in (operations or {}).get("running") or []:
        if op.get("description") in NOT_A_CHANGE:
            continue
        for url in (op.get("resources") or {}).get("instances") or []:
            name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
            if name.startswith(f"{plex}-"):
                out.append(f"{op.get('description', 'changing')} {name}")
    return out


class Observe(IncusRest):
    def wait_for_operations(self, plex: str, sleep: Callable[[float], None] = time.sleep) -> None:
        """Until Incus has no operation still changing an instance of `plex`: one an earlier
        plex, killed, left running (a create, a delete). A plan observed before it ends would
        create an instance that is about to appear, or keep one that is about to go."""
        deadline = time.monotonic() + OPERATIONS_WAIT
        while changes := instance_changes(
            self.sync("GET", "operations", params={"recursion": "1"}), plex
        ):
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"Incus is still busy with plex '{plex}' after {OPERATIONS_WAIT:.0f}s: "
                    + ", ".join(changes),
                    hint="see `incus operation list`; run the command again once they end",
                )
            sleep(OPERATIONS_POLL)

    def _instances_full(self) -> list[dict[str, Any]]:
        return self.sync("GET", "instances", params={"recursion": "1"}) or []

    def observe(self, plex: str) -> Observed:
        """Read-only: the instances and aliases of `plex` in the project. Others are ignored."""
        instances = {}
        for inst in self._instances_full():
            config = inst.get("config") or {}
            if not config and inst.get("location") and inst["name"].startswith(f"{plex}-"):
                # On a member that is down Incus lists only name, location and status Error:
                # an instance named like this plex's nodes is taken to be a copy of one, known
                # only as unreachable; its node is found by name (plex.deploy.copies). plex
                # never acts on it: --evacuate creates a new copy elsewhere.
                inst = {**inst, "config": {owner.PLEX: plex}}
                config = inst["config"]
            if not owned(config, plex) or config.get(owner.BUILD):
                continue
            instances[inst["name"]] = _observed(inst)
        aliases = {
            a["name"]: a["target"]
            for a in self.sync("GET", "images/aliases", params={"recursion": "1"}) or []
        }
        return Observed(
            plex=plex,
            project=self.project,
            instances=instances,
            aliases=aliases,
            members=self.members(),
        )

    def observe_builds(self, plex: str) -> list[ObservedInstance]:
        """Transient bake instances of `plex` (marked with user.plex.build)."""
        return [
            _observed(inst)
            for inst in self._instances_full()
            if owned(inst.get("config") or {}, plex) and (inst.get("config") or {}).get(owner.BUILD)
        ]

    def neighbours(self, network: str) -> list[Neighbour]:
        """Every instance with a NIC on `network`, in every project, with its configured and
        live IPv4 addresses (read-only: for the collision check before a deploy creates)."""
        insts = self.sync(
            "GET",
            "instances",
            project=False,
            what="list instances",
            params={"all-projects": "true", "recursion": "2"},
        )
        out = []
        for inst in insts or []:
            nics = [
                d
                for d in (inst.get("expanded_devices") or {}).values()
                if d.get("type") == "nic" and d.get("network") == network
            ]
            if nics:
                out.append(
                    Neighbour(
                        project=inst.get("project", "default"),
                        name=inst["name"],
                        addresses=_addresses(inst, nics),
                        plex=(inst.get("config") or {}).get(owner.PLEX),
                    )
                )
        return out

    def members(self) -> dict[str, str]:
        """Cluster members -> "" when online, else why not ("Offline: <Incus's message>");
        empty on a standalone server."""
        if not (self.host_info.get("environment") or {}).get("server_clustered"):
            return {}
        members = self.sync(
            "GET",
            "cluster/members",
            project=False,
            params={"recursion": "1"},
            what="cluster members",
        )
        out = {}
        for m in members or []:
            status = str(m.get("status", ""))
            out[m["server_name"]] = (
                "" if status == "Online" else (f"{status}: {m.get('message', '')}".rstrip(": "))
            )
        return out
