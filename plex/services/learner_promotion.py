"""Promote a joining server's etcd learner as soon as etcd takes it.

RKE2 adds a joining server to etcd as a learner, and only the etcd leader's server promotes
it, trying every 15 s (k3s manageLearners); the joiner is up only at its first datastore test
after that (k3s tests every 5 s). So each server join would wait up to 15 s for nothing. plex
promotes the learner itself, through a running server, as soon as etcd says it is in sync with
the leader: the join then waits for one datastore test at most. etcd itself refuses an unsafe
promotion (a learner that lags), and RKE2 would make the same call later anyway, so nothing
here can fail a deploy: any other answer leaves the promotion to RKE2.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from plex.backends.incus.protocol import Incus
from plex.deploy import etcd
from plex.errors import BackendError
from plex.model.plex import Plex
from plex.services.apply_result import Report
from plex.services.cluster import Cluster

INTERVAL = 0.5  # between looks at the member list: a learner syncs within about a second


def promote_when_in_sync(
    plex: Plex,
    incus: Incus,
    server: str,
    until: Callable[[], bool],
    report: Report,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Until `until()`: promote `server`'s learner through another running server. True
    once plex promoted it; False when it votes already or etcd refused for another reason."""
    cluster = Cluster(plex, incus)  # its own: a Cluster keeps the instances it last saw
    peers = cluster.running_servers(exclude=[server])
    while peers and not until():
        for peer in peers:
            try:
                members = cluster.members(peer)
            except (ValueError, BackendError):
                continue  # this peer's etcd does not answer (not started yet): the next one
            if etcd.votes(members, server):
                return False  # RKE2 promoted it first
            learner = etcd.learner_of(members, server)
            if learner is None:
                break  # not added or its etcd not started yet
            try:
                cluster.promote(peer, learner)
            except ValueError as e:
                if etcd.NOT_IN_SYNC in str(e):
                    break  # etcd's own "not yet": look again
                report(server, f"etcd learner promotion left to RKE2: {e}")
                return False
            report(server, f"etcd learner promoted (on {peer})")
            return True
        sleep(INTERVAL)
    return False


@contextmanager
def promoting(plex: Plex, incus: Incus, server: str, report: Report) -> Iterator[None]:
    """While the body runs (the joiner's probes): promote its learner in the background."""
    done = threading.Event()
    worker = threading.Thread(
        target=promote_when_in_sync,
        args=(plex, incus, server, done.is_set, report),
        name=f"promote-{server}",
        daemon=True,
    )
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join(timeout=15)  # at most one etcd call (curl --max-time 10) still running
