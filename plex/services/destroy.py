"""plex destroy: delete what the plex owns, on Incus and, for `registry.runtime: docker`, on
the Docker engine; the registry cache survives unless asked."""

from __future__ import annotations

from plex.backends.docker import Docker
from plex.backends.incus.protocol import Incus
from plex.deploy.spec import registry_volume
from plex.errors import UsageError
from plex.model import topology
from plex.model.plex import Plex, Runtime
from plex.services import pristine
from plex.services.registry import down_docker
from plex.store.lock import plex_lock


def destroy(
    plex: Plex, incus: Incus, everything: bool = False, docker: Docker | None = None
) -> list[str]:
    """Delete the plex's instances (only those plex owns) and, with the docker runtime, its
    registry containers on `docker`; the registry cache volume survives unless `everything`."""
    if plex.registry.runtime is Runtime.DOCKER and docker is None:
        raise UsageError(f"plex '{plex.name}' runs its registry on Docker: no engine to reach")
    with plex_lock(plex.name, "deploy"):
        incus.wait_for_operations(plex.name)  # a killed deploy's create ends first
        observed = incus.observe(plex.name)
        # Every generation of the plex is retired, and its pristine snapshots with it.
        pristine.retire(incus, pristine.nodes_and_images(observed), everything=True)
        removed = []
        # Reverse wave order: agents first, registry last.
        order = {n.name: i for i, n in enumerate(topology.nodes(plex))}
        for name in sorted(observed.instances, key=lambda n: -order.get(n, 1_000)):
            incus.delete_instance(name)
            removed.append(name)
        for b in incus.observe_builds(plex.name):
            incus.delete_instance(b.name)
            removed.append(b.name)
        if everything:
            vol = registry_volume(plex)
            if incus.volume_exists(plex.incus.pool, vol):
                incus.delete_volume(plex.incus.pool, vol)
                removed.append(f"volume {vol}")
        if docker is not None and plex.registry.runtime is Runtime.DOCKER:
            removed += down_docker(plex, docker, everything)
        return removed
