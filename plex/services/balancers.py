"""The plex's load balancers follow the plan: servers leave haproxy's rotation before they go
away and come back once their probes pass (haproxy's runtime API, see plex.lb.haproxy).

Best effort per lb, strict per answer: an lb that is not running (or is being replaced itself)
serves nobody, so it is skipped; a running haproxy that refuses a command is an error, because
the plan's promise (no request reaches a deleted server) would not hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from plex.backends.incus.protocol import Incus
from plex.errors import BackendError
from plex.lb import haproxy
from plex.model import topology
from plex.model.plex import Plex, Role
from plex.services.progress import unreported

Report = Callable[[str, str], None]


class Balancers:
    def __init__(self, plex: Plex, incus: Incus, report: Report | None = None) -> None:
        self.plex = plex
        self.incus = incus
        self.report: Report = report or unreported
        self.lbs = [n.name for n in topology.nodes(plex) if n.role is Role.LB]
        self.servers = {n.name for n in topology.nodes(plex) if n.role is Role.SERVER}
        self.instances: dict[str, str] = {}  # node -> instance, for evacuated lbs
        self._lock = threading.Lock()  # one runtime-API round per lb at a time

    def _run(self, lb: str, line: str) -> str | None:
        """The answer of `lb`'s haproxy, or None when the lb cannot answer (not running, no
        socket: an image baked before the runtime API was configured)."""
        try:
            res = self.incus.exec(self.instances.get(lb, lb), haproxy.client_argv(line))
        except BackendError as e:
            self.report(lb, f"runtime API skipped: {e.message}")
            return None
        if res.returncode != 0:
            self.report(lb, f"runtime API unavailable: {res.output[-120:]}")
            return None
        return res.stdout

    def set_state(self, servers: Iterable[str], state: haproxy.State) -> list[str]:
        """Set `servers` (those haproxy knows: the plex file's servers) to `state` on every lb
        that answers; returns the lbs that did."""
        names = sorted(s for s in servers if s in self.servers)
        if not names or not self.lbs:
            return []
        line = haproxy.set_state(names, state)
        done = []
        with self._lock:
            for lb in self.lbs:
                answer = self._run(lb, line)
                if answer is None:
                    continue
                refused = haproxy.errors(answer)
                if refused:
                    raise BackendError(
                        f"{lb}: haproxy refused {state.value} for "
                        f"{', '.join(names)}: {'; '.join(refused)[:200]}"
                    )
                done.append(lb)
        for s in names:
            self.report(s, f"lb {state.value}" + ("" if done else " (no lb answered)"))
        return done

    def maint(self, servers: Iterable[str]) -> list[str]:
        return self.set_state(servers, haproxy.State.MAINT)

    def ready(self, servers: Iterable[str]) -> list[str]:
        return self.set_state(servers, haproxy.State.READY)

    def states(self, lb: str) -> list[haproxy.ServerState]:
        answer = self._run(lb, haproxy.show_state())
        return haproxy.parse_state(answer or "")
