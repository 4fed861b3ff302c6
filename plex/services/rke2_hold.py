"""A kube node booted early, its RKE2 unit held until its turn.

etcd admits one new member at a time, so a cascade's servers join one after the other; what
each of them does before RKE2 starts (the container's boot: systemd, sshd, the network) needs
no turn. Likewise a restored agent may start RKE2 only once the supervisor answers through the
VIP (k3s agents retry their config fetch only every 5 s). So such a node is started early with
a systemd drop-in that keeps its RKE2 unit (rke2-server / rke2-agent) from starting at boot,
and released when its turn comes: the drop-in is removed and the unit started, as its boot
would have. RKE2 itself is unchanged: it starts, joins through the VIP and is probed exactly as
on a node that booted the usual way.

The drop-in conditions the unit on its own absence (`ConditionPathExists=!` itself): while it
exists the unit is skipped at boot (a skipped unit is neither failed nor queued, so the boot
finishes); once removed, nothing of the hold is left in the node (nor in a snapshot).
"""

from __future__ import annotations

from plex.backends.incus.protocol import Incus
from plex.errors import BackendError
from plex.model.plex import Role
from plex.services.node_shell import SYSTEMD_BUS


def unit(role: Role) -> str:
    return "rke2-server.service" if role is Role.SERVER else "rke2-agent.service"


def dropin_path(role: Role) -> str:
    return f"/etc/systemd/system/{unit(role)}.d/50-plex-hold.conf"


def dropin(role: Role) -> bytes:
    return (
        f"# Written by plex: {unit(role)} waits for this node's turn (a server's to join\n"
        "# etcd, which admits one new member at a time; an agent's for the supervisor through\n"
        "# the VIP). plex removes this file and starts the unit when the turn comes.\n"
        "[Unit]\n"
        f"ConditionPathExists=!{dropin_path(role)}\n"
    ).encode()


def hold(incus: Incus, name: str, role: Role) -> None:
    """Into the stopped node: its RKE2 unit stays down at its next boot."""
    path = dropin_path(role)
    incus.make_dirs(name, path.rsplit("/", 1)[0])
    incus.push_file(name, path, dropin(role), mode=0o644)


def release(incus: Incus, name: str, role: Role) -> None:
    """The node's turn: the hold goes, its RKE2 unit starts (its probes say when it is up).
    Only systemd's bus is waited for, not the end of the boot: a unit started while the node
    still boots joins the boot's transaction, as it would have without the hold."""
    script = (
        SYSTEMD_BUS + f"rm -f {dropin_path(role)} && systemctl daemon-reload && "
        f"systemctl start --no-block {unit(role)}"
    )
    res = incus.exec(name, ["sh", "-c", script])
    if res.returncode != 0:
        raise BackendError(f"{name}: starting the held {unit(role)} failed: {res.output[-300:]}")
