"""etcd quorum over a plan's waves: a rolling plan may not need or lose quorum. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from plex.deploy.actions import Action, Verb
from plex.errors import PlanRefused
from plex.model import topology
from plex.model.observed import ObservedInstance
from plex.model.plex import Plex, Role


def check_quorum(
    plex: Plex,
    mine: Mapping[str, ObservedInstance],
    planned: Sequence[Sequence[Action]],
    force: bool,
) -> list[str]:
    """Walk the waves keeping count of etcd members; refuse a plan that needs or loses quorum.

    Members: the plex's server instances, plus servers missing from Incus (deleted behind
    plex's back, they may still be members: dead ones). Without quorum etcd can add or
    remove no member, so no server can be replaced; and a wave may not take the running
    members below quorum (with 2 servers, replacing either leaves none to spare). Assumes apply
    removes a deleted server from etcd (drain + delete node) and that a wave's new servers are
    healthy before the next wave."""
    master = topology.master(plex).name if plex.roles.server and plex.roles.server.count else None
    members = {name for name, inst in mine.items() if inst.role == Role.SERVER.value}
    up = {name for name in members if mine[name].running}
    if master in mine:
        members |= {
            n.name for n in topology.nodes(plex) if n.role is Role.SERVER and n.name not in mine
        }
    notes: list[str] = []
    touched = sorted(
        a.node
        for wave in planned
        for a in wave
        if a.role is Role.SERVER and a.verb is not Verb.START
    )
    quorum = len(members) // 2 + 1
    # Judged on the servers running now: a cluster without quorum gets its stopped servers
    # started (a plan of starts only passes), but no server is added or replaced in the same
    # deploy, since whether the started ones restore quorum is only known after they start.
    if members and touched and len(up) < quorum:
        message = (
            f"etcd has no quorum ({len(up)} of {len(members)} servers running): "
            f"no server can be added or replaced ({', '.join(touched)})"
        )
        if not force:
            raise PlanRefused(
                f"plan refused: {message}",
                hint=f"start the stopped servers (incus start), or rebuild the cluster from a "
                f"new master: plex reset {plex.name}",
            )
        notes.append(f"forced: {message}")
    # Stopped servers the plan starts (its first wave, all together) count as up from then on.
    up |= {
        a.node for wave in planned for a in wave if a.verb is Verb.START and a.role is Role.SERVER
    }
    for i, wave in enumerate(planned, 1):
        servers = [a for a in wave if a.role is Role.SERVER]
        lost = sorted(
            a.node for a in servers if a.verb in (Verb.REPLACE, Verb.DELETE) and a.node in up
        )
        quorum = len(members) // 2 + 1
        left = len(up) - len(lost)
        if lost and len(members) >= 2 and left < quorum and len(up) >= quorum:
            message = (
                f"wave {i} takes down {', '.join(lost)}, leaving {left} of {len(members)} "
                f"etcd members (quorum is {quorum})"
            )
            if not force:
                raise PlanRefused(
                    f"plan refused: {message}",
                    hint="with 2 servers etcd has no member to spare: add a third server "
                    "first, or `plex reset` to rebuild; remove servers one per deploy; "
                    "--force accepts losing the cluster",
                )
            notes.append(f"forced: {message}")
        for a in servers:
            if a.verb is Verb.DELETE:
                members.discard(a.node)
                up.discard(a.node)
            elif a.verb in (Verb.CREATE, Verb.REPLACE, Verb.START):
                members.add(a.node)
                up.add(a.node)
    return notes
