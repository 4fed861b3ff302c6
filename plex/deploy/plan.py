"""The deploy plan: which nodes to create, replace, keep or delete, in health-gated waves. Pure.

Inputs are the plex file, the current image of each role and a snapshot of what Incus holds
(`Observed`); nothing here talks to Incus. Nodes are never changed in place: a node whose image
or spec drifted, that never finished its deploy, or that the user names in `--replace` is
replaced (deleted and created again). A node that is merely stopped (same image, same spec, it
passed its probes before) is started, not rebuilt; apply replaces it if it then fails its probes.

Two strategies, chosen by intent (`Plan.strategy`, with the reason `plex plan` shows):
- cascade: `--replace master` or `all` (and `plex reset`), or a master to replace when no
  other server of the cluster is alive: a new master is a new cluster, so every other server
  and agent is replaced with it, and they all join as soon as the new master is ready;
- rolling: any other change in a live cluster, `--replace <master's node name>` included.
  Servers go one at a time (a replaced master re-joins the running cluster through the VIP
  instead of bootstrapping a new one), agents in batches of at most `max_unavailable`.

Safety: outside a cascade, a plan that would leave etcd without quorum at any wave is refused
(PlanRefused) unless forced. A plan made over the state a successful apply leaves behind
(`simulate_apply`) is empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

from plex.deploy.actions import (
    ALL,
    EVACUATED,
    FORCED,
    IMAGE_CHANGED,
    MISSING,
    NOT_RUNNING,
    ORPHAN,
    ROLE_CHANGED,
    SPEC_CHANGED,
    STOPPED,
    UNFINISHED,
    UNREACHABLE,
    Action,
    Plan,
    Strategy,
    Verb,
    cascade_reason,
    default_max_unavailable,
    simulate_apply,
)
from plex.deploy.copies import view
from plex.deploy.graph import batch_agents, dependencies, step_dependencies, waves
from plex.deploy.quorum import check_quorum
from plex.deploy.spec import InstanceSpec, RoleProfile, instance_spec, load_profile
from plex.errors import PlexError, UsageError
from plex.model import owner, topology
from plex.model.image import ImageRef
from plex.model.observed import Observed, ObservedInstance, owned
from plex.model.plex import Plex, Role

# The plan's data lives in plex.deploy.actions; importers of these names from here keep working.
__all__ = ["Action", "Plan", "Strategy", "Verb", "make_plan", "resolve_replace", "simulate_apply"]


def _generation(inst: ObservedInstance) -> int:
    try:
        return int(inst.config.get(owner.GENERATION, "1"))
    except ValueError:
        return 1


def _role(value: str | None) -> Role | None:
    try:
        return Role(value) if value else None
    except ValueError:
        return None


def resolve_replace(plex: Plex, replace: Sequence[str]) -> set[str]:
    """`--replace` arguments to node names: names, short names, `master`, `all`."""
    out: set[str] = set()
    for r in replace:
        if r == ALL:
            out |= {n.name for n in topology.nodes(plex)}
        else:
            out.add(topology.resolve(plex, r).name)
    return out


def _ours(plex: Plex, observed: Observed, names: Collection[str]) -> dict[str, ObservedInstance]:
    """The plex's deployed instances. Bake build instances belong to bake, others to nobody."""
    mine: dict[str, ObservedInstance] = {}
    for name, inst in observed.instances.items():
        if owned(inst.config, plex.name) and inst.build is None:
            mine[name] = inst
        elif name in names:
            # Incus would refuse the create anyway; say why before anything is touched.
            raise PlexError(
                f"instance '{name}' in project '{observed.project}' is not a node of plex "
                f"'{plex.name}' (user.plex.plex is "
                f"{inst.plex!r}{', a bake build instance' if inst.build else ''})",
                hint="delete or rename it; plex never touches instances it does not own",
            )
    return mine


def make_plan(
    plex: Plex,
    images: Mapping[Role, ImageRef],
    observed: Observed,
    replace: Sequence[str] = (),
    force: bool = False,
    profiles: Mapping[Role, RoleProfile] | None = None,
    max_unavailable: int | None = None,
    evacuate: bool = False,
) -> Plan:
    """Compare the plex file and its images with what Incus holds. See the module docstring.

    `profiles` overrides the role profiles read from deploy/profiles (tests pin them).
    `max_unavailable`: agents replaced at once in a rolling plan (default: 25%, at least 1).
    `evacuate`: nodes of a cluster member that is down are re-created on online members
    (plex.deploy.copies); without it they are left alone."""
    nodes = topology.nodes(plex)
    names = [n.name for n in nodes]
    # By node: the copy serving it, and where each node goes (plex.deploy.copies).
    ours = dataclasses.replace(observed, instances=_ours(plex, observed, names))
    v = view(plex, nodes, observed, evacuate, ours)
    mine, placed, evacuating = v.mine, v.placed, v.evacuating
    forced = resolve_replace(plex, replace)
    # `--replace master` (and `all`) asks for a new cluster by intent; naming the master node
    # itself (`--replace demo-server1`) replaces it like any server, the cluster staying.
    new_cluster = any(r in (topology.MASTER, ALL) for r in replace)

    missing = sorted({n.role.value for n in nodes} - {r.value for r in images})
    if missing:
        raise UsageError(
            f"no image for role {', '.join(missing)} of plex '{plex.name}'",
            hint=f"run: plex bake {plex.name}",
        )

    loaded: dict[Role, RoleProfile] = dict(profiles or {})
    specs: dict[str, InstanceSpec] = {}
    for n in nodes:
        if n.role not in loaded:
            loaded[n.role] = load_profile(n.role, n.virt)
        p = placed[n.name]
        at = dataclasses.replace(n, member=p.member)
        spec = instance_spec(plex, at, images[n.role], loaded[n.role])
        specs[n.name] = dataclasses.replace(spec, name=p.instance)

    # 0. Nodes on a cluster member that is down (plex.deploy.copies.view).
    unreachable = v.unreachable

    # 1. Each node on its own: missing, drifted, broken or forced. A node that is only stopped
    # (it passed its probes once and nothing about it changed) is started instead.
    own: dict[str, list[str]] = {}
    stopped: set[str] = set()
    mac_pending: list[str] = []
    for n in nodes:
        inst = mine.get(n.name)
        if inst is None:
            continue
        if n.name in unreachable:
            own[n.name] = []
            continue
        if n.name in evacuating:
            own[n.name] = [f"{EVACUATED}: {placed[n.name].why}"]
            continue
        reasons = []
        if n.name in forced:
            reasons.append(FORCED)
        if inst.config.get(owner.READY) != "true":
            reasons.append(UNFINISHED)
        if inst.image != images[n.role].digest:
            reasons.append(IMAGE_CHANGED)
        if inst.spec != specs[n.name].digest and inst.spec == specs[n.name].digest_before_mac:
            mac_pending.append(n.name)  # the MAC is set when the node is next replaced
        elif inst.spec != specs[n.name].digest:
            home = inst.name != specs[n.name].name and inst.location != specs[n.name].target
            reasons.append(f"back to member {specs[n.name].target}" if home else SPEC_CHANGED)
        if inst.role != n.role.value:
            reasons.append(ROLE_CHANGED)
        if not inst.running:
            if reasons:
                reasons.insert(0, NOT_RUNNING)
            else:
                stopped.add(n.name)
        own[n.name] = reasons

    # 2. The strategy. A new master bootstraps a new cluster, which every existing kube node
    # must join (the cascade) -- unless other servers are alive: then the cluster stays and the
    # master is replaced like any server, joining it through the VIP (rolling).
    master = next((n for n in nodes if n.is_master), None)
    alive = sorted(
        name
        for name, inst in mine.items()
        if inst.role == Role.SERVER.value
        and master is not None
        and name != master.name
        and inst.running
        and inst.config.get(owner.READY) == "true"
        and name in specs
        and name not in unreachable
    )
    cascade: str | None = None
    join = False
    why = ""
    if master is not None and master.name in forced and new_cluster:
        cascade = master.name
        why = f"--replace {'all' if ALL in replace else 'master'}: a new master is a new cluster"
    elif master is not None and (master.name not in mine or own[master.name]):
        if alive:
            join = True
            why = (
                f"{master.name} is replaced as a joiner of the running cluster "
                f"(alive: {', '.join(alive)})"
            )
            if master.name in forced:
                why += ": named, not `master`; only --replace master rebuilds the cluster"
        else:
            cascade = master.name
            why = f"{master.name} must be replaced and no other server is alive: a new cluster"
    elif master is not None and master.name in stopped and alive:
        join = True  # started; if it fails its probes, apply replaces it as a joiner
    cascaded = {
        n.name
        for n in nodes
        if cascade
        and n.role.is_kube
        and n.name != cascade
        and n.name in mine
        and n.name not in unreachable
    }
    # A cluster that survives the plan: kube nodes leaving it are drained first.
    live = cascade is None and any(
        inst.running for inst in mine.values() if inst.role == Role.SERVER.value
    )

    actions: dict[str, Action] = {}
    for n in nodes:
        spec = specs[n.name]
        inst = mine.get(n.name)
        if inst is None and n.name in unreachable:
            why = f"{UNREACHABLE}: {unreachable[n.name]} (not created)"
            actions[n.name] = Action(Verb.KEEP, n.name, n.role, (why,), spec)
            continue
        if inst is None:
            actions[n.name] = Action(
                Verb.CREATE,
                n.name,
                n.role,
                (MISSING,),
                spec,
                generation=1,
                join=master is not None and n.name == master.name and join,
            )
            continue
        if n.name in unreachable:
            actions[n.name] = Action(
                Verb.KEEP,
                n.name,
                n.role,
                (f"{UNREACHABLE}: {unreachable[n.name]}",),
                spec,
                generation=_generation(inst),
            )
            continue
        reasons = list(own[n.name])
        if n.name in cascaded:
            reasons.append(cascade_reason(cascade or ""))
        is_master = master is not None and n.name == master.name
        if not reasons and n.name in stopped:
            actions[n.name] = Action(
                Verb.START,
                n.name,
                n.role,
                (STOPPED,),
                spec,
                generation=_generation(inst),
                join=is_master and join,
            )
            continue
        if not reasons:
            actions[n.name] = Action(
                Verb.KEEP, n.name, n.role, (), spec, generation=_generation(inst)
            )
            continue
        actions[n.name] = Action(
            Verb.REPLACE,
            n.name,
            n.role,
            tuple(reasons),
            spec,
            drain=live and n.role.is_kube and inst.running,
            forget=live and n.role.is_kube and not inst.running,
            generation=_generation(inst) + 1,
            cascade_from=cascade if n.name in cascaded or n.name == cascade else None,
            join=is_master and join,
            instance=inst.name if inst.name != n.name else "",
            evacuate_from=placed[n.name].evacuated_from if n.name in evacuating else None,
        )
    orphans = sorted(set(mine) - set(names))
    for name in orphans:
        inst = mine[name]
        role = _role(inst.role)
        if name in unreachable:
            actions[name] = Action(
                Verb.KEEP,
                name,
                role,
                (f"{UNREACHABLE}: {unreachable[name]}",),
                generation=_generation(inst),
            )
            continue
        actions[name] = Action(
            Verb.DELETE,
            name,
            role,
            (ORPHAN,),
            drain=live and role is not None and role.is_kube and inst.running,
            forget=live and role is not None and role.is_kube and not inst.running,
            generation=_generation(inst),
            instance=inst.name if inst.name != name else "",
        )

    # 3. Waves. Stopped nodes start first, all together (etcd members need each other for
    # quorum). Then broken servers: bringing one back restores quorum before a healthy one is
    # taken down.
    others = [n for n in nodes if n.role is Role.SERVER and not n.is_master]
    server_order = [
        n.name
        for n in sorted(others, key=lambda n: (n.name not in mine or mine[n.name].running, n.index))
    ]
    order = [*names, *orphans]
    starts = [name for name in order if actions[name].verb is Verb.START]
    changing = {name for name, a in actions.items() if a.verb.changes and name not in starts}
    graph = dependencies(nodes, server_order, orphans, cascade=cascade is not None)
    grouped = waves(graph, changing, order)
    if cascade is None:
        agents = sum(1 for n in nodes if n.role is Role.AGENT)
        limit = max_unavailable or default_max_unavailable(agents)
        replaced_agents = {
            n for n, a in actions.items() if a.role is Role.AGENT and a.verb is Verb.REPLACE
        }
        grouped = batch_agents(grouped, replaced_agents, limit)
    planned = tuple(
        tuple(actions[name] for name in wave) for wave in ([starts] if starts else []) + grouped
    )
    # What each node waits for in apply: a rolling plan is a chain, wave after wave; in a
    # cascade a node waits only for what the graph says (and for the starts, which go first).
    chained = range(len(planned)) if cascade is None else ()
    after = {
        name: tuple(dict.fromkeys([*(s for s in starts if name not in starts), *deps]))
        for name, deps in step_dependencies(
            graph, [[a.node for a in w] for w in planned], chained
        ).items()
    }

    notes = v.notes(plex.name)
    kept = [n for n in mac_pending if actions[n].verb is not Verb.REPLACE]
    if kept:
        notes.append(
            f"{', '.join(kept)}: made before plex set precomputed MACs; each gets its MAC at its "
            "next replacement (a MAC alone replaces no healthy node)"
        )
    if cascade is None:
        notes += check_quorum(plex, mine, planned, force)
    replaced = any(a.verb is Verb.REPLACE for a in actions.values())
    if cascade:
        strategy = Strategy.CASCADE
    elif planned:
        strategy = Strategy.ROLLING
        if not why and replaced:
            agents = sum(1 for n in nodes if n.role is Role.AGENT)
            why = (
                "the cluster stays: servers one at a time, agents at most "
                f"{max_unavailable or default_max_unavailable(agents)} at once"
            )
        elif not why:
            why = "the cluster stays: nodes are only created, started or deleted"
    else:
        strategy = Strategy.NONE
    return Plan(
        plex=plex.name,
        project=plex.incus.project,
        actions=tuple(actions[name] for name in order),
        waves=planned,
        after=after,
        cascade_from=cascade if cascaded else None,
        notes=tuple(notes),
        unreachable=unreachable,
        strategy=strategy,
        why=why,
        stale=v.stale,
    )
