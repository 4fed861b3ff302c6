"""The deploy-side operations behind the CLI: plain functions over the backend and the planner.

observe -> plan -> (show, confirm: the CLI) -> apply, under the plex's deploy lock.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import yaml

from plex.backends.incus.protocol import Incus
from plex.deploy.actions import Plan, PlanOptions, Verb
from plex.deploy.copies import NodeCopies, live_instances, node_copies
from plex.deploy.kured import server_manifests
from plex.deploy.plan import make_plan
from plex.deploy.probes import KUBECONFIG, KUBECTL, load_probes
from plex.errors import BackendError, PlexError, UsageError
from plex.model import owner, topology
from plex.model.image import ImageRef, image_alias
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.plexfile.crosscheck import live_collisions
from plex.services import pristine
from plex.services.apply import Applier
from plex.services.apply_result import ApplyOptions, ApplyResult, Report
from plex.services.cluster import Cluster
from plex.store.catalog import current_images, load_catalog
from plex.store.identity import require_identity
from plex.store.lock import plex_lock


def deploy_dir(root: Path) -> Path:
    return root / "deploy"


def plan_observed(
    plex: Plex,
    observed: Observed,
    images: Mapping[Role, ImageRef] | None = None,
    **options: Unpack[PlanOptions],
) -> Plan:
    """The one plan path (plan, deploy, reset, rollback, registry up): each role deploys the
    image its alias `<plex>/<role>` points at in `observed`, which is what a deploy creates
    nodes from; `images` overrides that (plex plan --images)."""
    if images is None:
        images = current_images(plex, observed.aliases)
    return make_plan(plex, images, observed, **options)


# `--evacuate` re-creates the nodes of the members that are down, so it acts only on a view of
# the members that held still: right after a member dies, Incus can briefly show others as down
# too (a new database leader while heartbeats catch up), and a plan made then would evacuate
# nodes that are fine (seen in test_cluster: the master's member, caught by the quorum check).
SETTLE_READS = 3  # consecutive observations that must agree on which members are down
SETTLE_INTERVAL = 2.0  # seconds between them
SETTLE_TRIES = 15  # observations at most before giving up on a cluster that keeps changing


def down_members(observed: Observed) -> dict[str, str]:
    return {m: why for m, why in observed.members.items() if why}


def observe_settled(
    plex: Plex, incus: Incus, sleep: Callable[[float], None] = time.sleep
) -> Observed:
    """The plex observed once the same members were down in SETTLE_READS observations in a
    row (at once when every member is online); a BackendError naming the members when they
    keep changing."""
    observed = incus.observe(plex.name)
    agreed, tries = 1, 1
    while down_members(observed) and agreed < SETTLE_READS:
        if tries >= SETTLE_TRIES:
            seen = ", ".join(f"{m} ({why})" for m, why in down_members(observed).items())
            raise BackendError(
                f"cluster members keep changing state ({tries} observations "
                f"{SETTLE_INTERVAL:g} s apart, last down: {seen}): not evacuating",
                hint="check `incus cluster list`, then run the deploy again",
            )
        sleep(SETTLE_INTERVAL)
        again = incus.observe(plex.name)
        tries += 1
        same = down_members(again).keys() == down_members(observed).keys()
        agreed = agreed + 1 if same else 1
        observed = again
    return observed


def observe_for_plan(plex: Plex, incus: Incus, evacuate: bool = False) -> Observed:
    """What a plan is made from, once Incus is done changing the plex's instances: with
    `evacuate`, only a settled view of the members."""
    incus.wait_for_operations(plex.name)
    return observe_settled(plex, incus) if evacuate else incus.observe(plex.name)


def make_deploy_plan(
    plex: Plex, incus: Incus, **options: Unpack[PlanOptions]
) -> tuple[Plan, Observed]:
    observed = observe_for_plan(plex, incus, bool(options.get("evacuate")))
    return plan_observed(plex, observed, **options), observed


def check_network(plex: Plex, incus: Incus, plan: Plan) -> None:
    """Refuse, before anything is created, a plan whose nodes would collide with what other
    projects or plexes already have on the network (DNS names, addresses, the VIP)."""
    if not any(a.verb in (Verb.CREATE, Verb.REPLACE) for a in plan.actions):
        return
    problems = live_collisions(plex, incus.neighbours(plex.incus.network))
    if problems:
        raise PlexError(
            f"plex '{plex.name}' collides with " + "; and with ".join(problems),
            hint="move the plex to its own CIDR/names, or remove the other instances",
        )


def apply_plan(
    plex: Plex,
    incus: Incus,
    plan: Plan,
    root: Path,
    **options: Unpack[ApplyOptions],
) -> ApplyResult:
    check_network(plex, incus, plan)
    identity = require_identity(plex)
    probes = load_probes(deploy_dir(root) / "probes.yaml")
    applier = Applier(plex, incus, identity, probes, deploy_id=uuid.uuid4().hex[:12], **options)
    result = applier.apply(plan)
    # The plex changed: the pristine snapshots of the generation it was go with it.
    pristine.retire(incus, pristine.survivors(plan), everything=True)
    return result


def deploy(
    plex: Plex,
    incus: Incus,
    root: Path,
    replace: Sequence[str] = (),
    force: bool = False,
    parallel: int = 0,
    report: Report | None = None,
    max_unavailable: int | None = None,
    evacuate: bool = False,
) -> tuple[Plan, ApplyResult]:
    """Plan and apply without asking (the CLI asks in between). `parallel` 0: adapt to the
    host (see plex.services.parallelism.adaptive_parallel)."""
    with plex_lock(plex.name, "deploy"):
        plan, _ = make_deploy_plan(
            plex,
            incus,
            replace=replace,
            force=force,
            max_unavailable=max_unavailable,
            evacuate=evacuate,
        )
        return plan, apply_plan(
            plex, incus, plan, root, parallel=parallel, report=report, force=force
        )


@dataclass(frozen=True)
class Rollback:
    """One role's moving alias going back one generation (not yet moved)."""

    role: str
    from_digest: str | None
    to_digest: str
    alias: str = ""
    to_fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "from": self.from_digest, "to": self.to_digest}


def rollback_moves(plex: Plex, observed: Observed, role: Role | None = None) -> list[Rollback]:
    """Where each role's moving alias would point after a rollback: the generation before the
    one it points at now. Moves nothing (see move_aliases)."""
    catalog = load_catalog(plex.name)
    roles = [role] if role else [r for r, rc in plex.roles.items() if rc.count]
    out = []
    for r in roles:
        gens = catalog.generations(r)
        alias = image_alias(plex.name, r)
        current = observed.aliases.get(alias)
        idx = next((i for i, e in enumerate(gens) if e.fingerprint == current), None)
        if idx is None or idx + 1 >= len(gens):
            raise UsageError(
                f"{alias}: no previous image generation to roll back to",
                hint=f"plex image list {plex.name}",
            )
        prev = gens[idx + 1]
        out.append(Rollback(r.value, gens[idx].digest, prev.digest, alias, prev.fingerprint))
    return out


def rolled_back(observed: Observed, moves: Sequence[Rollback]) -> Observed:
    """`observed` as it will be once `moves` are made: what the rollback's plan is made over."""
    aliases = {**observed.aliases, **{m.alias: m.to_fingerprint for m in moves}}
    return dataclasses.replace(observed, aliases=aliases)


def move_aliases(incus: Incus, moves: Sequence[Rollback]) -> None:
    for m in moves:
        incus.set_alias(m.alias, m.to_fingerprint)


def status_rows(plex: Plex, incus: Incus) -> list[dict[str, Any]]:
    observed = incus.observe(plex.name)
    images = current_images(plex, observed.aliases)
    nodes = topology.nodes(plex)
    copies = node_copies(observed, [n.name for n in nodes])
    rows = []
    for n in nodes:
        c = copies.get(n.name, NodeCopies(n.name))
        inst = c.current
        newest = images.get(n.role)
        why = observed.unreachable(inst) if inst else None
        row: dict[str, Any] = {
            "node": n.name,
            "role": n.role.value,
            "address": n.address,
            "state": inst.status if inst else "absent",
            "ready": bool(inst and inst.config.get(owner.READY) == "true"),
            "image": (inst.image or "")[:12] if inst else None,
            "current_image": newest.digest[:12] if newest else None,
            "up_to_date": bool(inst and newest and inst.image == newest.digest),
            "generation": inst.config.get(owner.GENERATION) if inst else None,
            "member": inst.location if inst else n.member,
            "unreachable": why,
            # Evacuated nodes (plex.deploy.copies): the instance serving the node, copies
            # left on a member that is down, and stale ones the next deploy deletes first.
            "instance": inst.name if inst else None,
            "lost_copies": [i.name for i in c.lost if i is not inst],
            "stale_copies": [i.name for i in c.stale],
        }
        rows.append(row)
    return rows


def instance_of(plex: Plex, incus: Incus, node: str) -> str:
    """The instance serving `node`: its name, or an evacuated copy's (plex.deploy.copies)."""
    return live_instances(incus.observe(plex.name), [node]).get(node, node)


def etcd_status(plex: Plex, incus: Incus) -> dict[str, Any] | None:
    """etcd as each running server sees it (members, leader, quorum); None without servers."""
    if not plex.roles.server or not plex.roles.server.count:
        return None
    return Cluster(plex, incus).summary()


ADDONS_API = "/apis/k3s.cattle.io/v1/namespaces/kube-system/addons"


def bootstrap_rows(plex: Plex, incus: Incus) -> list[dict[str, Any]]:
    """Each bootstrap manifest and whether the cluster applied it: RKE2's deploy controller
    records an Addon per file whose spec.checksum is the sha256 of what it applied."""
    manifests = server_manifests(plex)
    if not manifests:
        return []
    master = instance_of(plex, incus, topology.master(plex).name)
    addons: dict[str, Any] = {}
    problem = ""
    try:
        res = incus.exec(master, [KUBECTL, "--kubeconfig", KUBECONFIG, "get", "--raw", ADDONS_API])
        if res.returncode == 0:
            addons = {a["metadata"]["name"]: a for a in json.loads(res.stdout).get("items", [])}
        else:
            problem = res.output[-160:] or f"kubectl exited with {res.returncode}"
    except (BackendError, ValueError, KeyError) as e:
        problem = str(e)
    rows = []
    for m in manifests:
        addon = addons.get(m.addon) or {}
        applied = (addon.get("spec") or {}).get("checksum")
        rows.append(
            {
                "manifest": m.name,
                "addon": m.addon,
                "sha256": m.sha256[:12],
                "applied": applied == m.sha256,
                "state": (
                    "applied"
                    if applied == m.sha256
                    else f"unknown: {problem}"
                    if problem
                    else (addon.get("status") or {}).get("error")
                    or ("older version applied" if applied else "not applied yet")
                ),
            }
        )
    return rows


def kubeconfig(plex: Plex, incus: Incus) -> str:
    """The admin kubeconfig from the master, its server rewritten to the VIP (or master)."""
    master = topology.master(plex)
    try:
        raw = incus.pull_file(instance_of(plex, incus, master.name), KUBECONFIG).decode()
    except BackendError as e:
        raise BackendError(
            f"cannot read {KUBECONFIG} from {master.name}: {e.message}",
            hint=f"is the plex deployed? plex status {plex.name}",
        ) from None
    api = topology.api_address(plex)
    return re.sub(r"server:\s*https://[^\s:]+:6443", f"server: https://{api}:6443", raw)


def inventory(plex: Plex) -> dict[str, Any]:
    """An Ansible YAML inventory of the plex, grouped by role (pure)."""
    groups: dict[str, Any] = {}
    for n in topology.nodes(plex):
        groups.setdefault(n.role.value, {"hosts": {}})["hosts"][n.name] = {
            "ansible_host": n.address,
            "plex_role": n.role.value,
            "plex_master": n.is_master,
        }
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
                "plex_name": plex.name,
                "plex_vip": plex.network.vip,
                "plex_domain": plex.network.domain,
            },
            "children": {
                **groups,
                "kube": {"children": {r: {} for r in ("server", "agent") if r in groups}},
            },
        }
    }


def inventory_yaml(plex: Plex) -> str:
    return yaml.safe_dump(inventory(plex), sort_keys=False)
