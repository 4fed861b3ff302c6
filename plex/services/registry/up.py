"""`registry up` / `down`: the registry node on Incus, or the registry containers on Docker.

- `up_incus`: deploy ONLY the registry node (a plan over the registry alone: it is the first
  wave and depends on nothing), its cache on the custom volume `<plex>-registry-cache` that
  reset and destroy keep; then push the upstream logins, if the plex names a credentials file.
- `up_docker`: `registry.runtime: docker`: the same cache as containers on a Docker engine (one
  zot, or one distribution per upstream) over a named volume of the same name.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plex.backends.docker import LABEL_PLEX, LABEL_SPEC, ContainerFile, ContainerSpec, Docker
from plex.backends.incus.protocol import Incus
from plex.deploy.actions import Plan
from plex.deploy.spec import registry_volume
from plex.model.plex import Engine, Plex, Role
from plex.model.record import record_json
from plex.registry import distribution, zot
from plex.registry.credentials import Credentials, load_plex_credentials
from plex.registry.engines import engine_files
from plex.services.apply_result import ApplyResult, Report
from plex.services.deploy import apply_plan, plan_observed
from plex.services.registry.node import container_name, endpoints, registry_node
from plex.services.registry_secrets import push_credentials
from plex.store.lock import plex_lock

DISTRIBUTION_IMAGE = "registry:2"  # CNCF Distribution's official image; binary /bin/registry
ZOT_BINARY = "/usr/bin/zot"


@dataclass(frozen=True)
class UpResult:
    plex: str
    runtime: str
    engine: str
    volume: str
    volume_created: bool
    actions: tuple[str, ...]  # what happened, one line each ("demo-registry1: create (missing)")
    endpoints: tuple[str, ...]  # where the cache listens (the nodes' mirror endpoints)
    secrets_pushed: tuple[str, ...] = ()  # paths only, never content
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return record_json(self)


def registry_only(plex: Plex) -> Plex:
    """The plex with its registry role only: what `registry up` plans over.

    Planning the registry alone is the registry's share of the whole plan: it is the first wave,
    depends on no other node and is never cascaded, and its instance spec reads nothing but the
    registry's own settings. Other roles need not be baked for it."""
    roles = plex.roles.model_copy(update={r.value: None for r in Role if r is not Role.REGISTRY})
    return plex.model_copy(update={"roles": roles})


def registry_plan(plex: Plex, incus: Incus, replace: bool = False) -> Plan:
    node = registry_node(plex)
    alone = registry_only(plex)
    observed = incus.observe(plex.name)
    # Only the registry's instance: every other node of the plex would look like an orphan.
    mine = dataclasses.replace(
        observed, instances={k: v for k, v in observed.instances.items() if k == node.name}
    )
    return plan_observed(alone, mine, replace=[node.name] if replace else [])


def up_incus(
    plex: Plex,
    incus: Incus,
    root: Path,
    replace: bool = False,
    parallel: int = 8,
    report: Report | None = None,
) -> tuple[UpResult, Plan, ApplyResult | None]:
    """Create (or keep, or with `replace` recreate) the registry node, then push logins."""
    start = time.monotonic()
    node = registry_node(plex)
    volume = registry_volume(plex)
    with plex_lock(plex.name, "deploy"):
        plan = registry_plan(plex, incus, replace)
        created = not incus.volume_exists(plex.incus.pool, volume)
        result = (
            None
            if plan.empty
            else apply_plan(plex, incus, plan, root, parallel=parallel, report=report)
        )
        pushed = push_credentials(plex, incus, node.name)
    actions = tuple(
        f"{a.node}: {a.verb.value}" + (f" ({a.reason})" if a.reason else "") for a in plan.actions
    )
    up = UpResult(
        plex.name,
        "incus",
        plex.registry.engine.value,
        volume,
        created,
        actions,
        endpoints(plex),
        tuple(pushed),
        time.monotonic() - start,
    )
    return up, plan, result


def docker_specs(
    plex: Plex, credentials: Credentials | None = None, images: Mapping[Engine, str] | None = None
) -> list[ContainerSpec]:
    """The registry's containers for `runtime: docker` (pure). `images` overrides an engine's
    image (tests use a locally built one; the real ones come from ghcr.io / Docker Hub)."""
    volume = registry_volume(plex)
    labels = {LABEL_PLEX: plex.name}
    if plex.registry.engine is Engine.ZOT:
        files = tuple(
            ContainerFile(f.path, f.content.encode(), f.mode, f.secret)
            for f in engine_files(plex, credentials)
        )
        image = (images or {}).get(Engine.ZOT, zot.image(plex))
        return [
            ContainerSpec(
                container_name(plex),
                image,
                (ZOT_BINARY,),
                ("serve", zot.CONFIG_PATH),
                {volume: zot.ROOT_DIRECTORY},
                files,
                labels,
            )
        ]
    image = (images or {}).get(Engine.DISTRIBUTION, DISTRIBUTION_IMAGE)
    specs = []
    for p in distribution.distribution_proxies(plex, credentials):
        # The registry image runs as root: a login-bearing config is 0600 root.
        cfg = ContainerFile(
            p.config_path,
            distribution.render_yaml(p.config).encode(),
            0o600 if p.has_secrets else 0o644,
            p.has_secrets,
        )
        specs.append(
            ContainerSpec(
                container_name(plex, p.upstream.name),
                image,
                ("/bin/registry",),
                ("serve", p.config_path),
                {volume: distribution.ROOT_DIRECTORY},
                (cfg,),
                {**labels, "plex.upstream": p.upstream.name},
            )
        )
    return specs


def up_docker(plex: Plex, docker: Docker, images: Mapping[Engine, str] | None = None) -> UpResult:
    """Named volume, then the engine's containers: kept when unchanged and running, else
    recreated; containers of the plex that are no longer wanted are removed."""
    start = time.monotonic()
    volume = registry_volume(plex)
    created = docker.ensure_volume(volume, {LABEL_PLEX: plex.name})
    specs = docker_specs(plex, load_plex_credentials(plex), images)
    for image in sorted({s.image for s in specs}):
        if not docker.has_image(image):
            docker.pull_image(image)
    existing = {c.name: c for c in docker.containers(plex.name)}
    actions = []
    for spec in specs:
        have = existing.pop(spec.name, None)
        if have is not None and have.running and have.labels.get(LABEL_SPEC) == spec.digest():
            actions.append(f"{spec.name}: keep")
            continue
        if have is not None:
            docker.remove(spec.name)
        docker.run(spec)
        actions.append(f"{spec.name}: {'replace' if have else 'create'}")
    for name in sorted(existing):
        docker.remove(name)
        actions.append(f"{name}: delete (not in the plex file)")
    pushed = tuple(f.path for s in specs for f in s.files if f.secret)
    return UpResult(
        plex.name,
        "docker",
        plex.registry.engine.value,
        volume,
        created,
        tuple(actions),
        endpoints(plex),
        pushed,
        time.monotonic() - start,
    )


def down_docker(plex: Plex, docker: Docker, everything: bool = False) -> list[str]:
    """Remove the plex's registry containers; the cache volume too only with `everything`."""
    removed = []
    for c in docker.containers(plex.name):
        docker.remove(c.name)
        removed.append(c.name)
    volume = registry_volume(plex)
    if everything and docker.volume_exists(volume):
        docker.delete_volume(volume)
        removed.append(f"volume {volume}")
    return removed
