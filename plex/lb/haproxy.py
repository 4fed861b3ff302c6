"""haproxy's runtime API as plex uses it: put a backend server in maintenance or back. Pure.

Every lb's haproxy.cfg (bake/templates/haproxy.cfg.j2) opens an admin-level stats socket at
`SOCKET`; plex talks to it from inside the lb with the python3 every node carries (the base
image's), so no extra package is needed. Commands and answers follow haproxy 2.6's management
guide (doc/management.txt, "9.3. Unix Socket commands"):

- `set server <backend>/<server> state maint|ready|drain` answers an empty line on success and
  a message (e.g. "No such server.") otherwise; several commands may share one line, separated
  by `;`, and their answers are concatenated;
- `show servers state <backend>` prints a version line, a `#` header, then one line per server
  whose fields are named by that header (srv_name, srv_op_state, srv_admin_state, ...).

Runtime states are not persisted: a restarted haproxy starts from its config (every server
enabled, health checks deciding), which is what a freshly created lb should do anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

SOCKET = "/run/haproxy-admin.sock"
# The backends of haproxy.cfg.j2: each server of the plex is in both, under its node name.
BACKENDS = ("rke2-apiserver", "rke2-supervisor")

# srv_op_state values (haproxy's enum srv_state): 0 stopped, 1 starting, 2 running, 3 stopping.
OP_RUNNING = 2
# srv_admin_state bits (enum srv_admin): FMAINT 0x01, IMAINT 0x02, CMAINT 0x04, FDRAIN 0x08...
ADMIN_MAINT_MASK = 0x01 | 0x02 | 0x04 | 0x20  # forced, inherited, config, resolution maint


class State(StrEnum):
    MAINT = "maint"  # no new connection, no health check: the server is about to go away
    READY = "ready"  # back in rotation (health checks resume from the last known health)
    DRAIN = "drain"  # existing connections only


def set_state(servers: Iterable[str], state: State) -> str:
    """One runtime API line setting every named server of every backend to `state`."""
    return ";".join(f"set server {b}/{s} state {state.value}" for s in servers for b in BACKENDS)


def errors(answer: str) -> list[str]:
    """The non-empty lines of a `set server` answer: each one is a refused command."""
    return [line.strip() for line in answer.splitlines() if line.strip()]


@dataclass(frozen=True)
class ServerState:
    backend: str
    server: str
    op_state: int
    admin_state: int

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & ADMIN_MAINT_MASK)

    @property
    def up(self) -> bool:
        return self.op_state == OP_RUNNING and not self.maint


def show_state() -> str:
    return ";".join(f"show servers state {b}" for b in BACKENDS)


def parse_state(answer: str) -> list[ServerState]:
    """Parse `show servers state` output (one or several backends)."""
    out: list[ServerState] = []
    header: list[str] = []
    for line in answer.splitlines():
        line = line.strip()
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            continue
        fields = line.split()
        if not header or len(fields) < len(header) - 5 or not fields[0].isdigit():
            continue  # the version line, blank lines
        row = dict(zip(header, fields, strict=False))
        out.append(
            ServerState(
                row["be_name"],
                row["srv_name"],
                int(row["srv_op_state"]),
                int(row["srv_admin_state"]),
            )
        )
    return out


# Runs inside the lb: one connection per call, the line sent, the whole answer printed. haproxy
# closes a non-interactive CLI connection after answering.
CLIENT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(10)\n"
    "s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode() + b'\\n')\n"
    "out = b''\n"
    "while True:\n"
    "    d = s.recv(65536)\n"
    "    if not d:\n"
    "        break\n"
    "    out += d\n"
    "sys.stdout.write(out.decode())\n"
)


def client_argv(line: str) -> list[str]:
    return ["python3", "-c", CLIENT, SOCKET, line]
