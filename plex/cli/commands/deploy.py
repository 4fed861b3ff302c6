"""plex deploy / reset / destroy / rollback / status / kubeconfig / inventory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from plex.cli import ui
from plex.cli.app import (
    InventoryFormat,
    OutputOpt,
    PlexArg,
    app,
    check_output,
    get_plex,
    parse_role,
)
from plex.cli.commands.plan import render
from plex.cli.options import (
    EvacuateOpt,
    ForceOpt,
    MaxUnavailableOpt,
    ParallelOpt,
    ReplaceOpt,
    YesOpt,
)
from plex.errors import UsageError
from plex.model.enums import Role, Runtime
from plex.plexfile.home import project_root

if TYPE_CHECKING:  # the models, the deploy engine (and pylxd) load only when a command runs
    from plex.backends.incus.protocol import Incus
    from plex.deploy.actions import Plan
    from plex.model.plex import Plex
    from plex.services.apply_result import ApplyResult


def _connect(p: Plex) -> Incus:
    from plex.backends.incus.client import connect

    return connect(p.incus)


def confirm_or_refuse(question: str, yes: bool, refused: str) -> None:
    """Nothing changes without a yes: --yes, or an answer on a terminal. JSON output is no
    answer: without --yes and without a terminal to ask on, refuse (exit 2)."""
    if yes:
        return
    if not ui.can_ask():
        raise UsageError(f"{refused}: no terminal to confirm on", hint="re-run with --yes")
    if not ui.confirm(question):
        raise UsageError(refused, hint="re-run with --yes to apply without asking")


def run_deploy(
    p: Plex,
    incus: Incus,
    replace: list[str],
    yes: bool,
    parallel: int,
    force: bool,
    as_json: bool,
    verb: str = "deploy",
    rollback: bool = False,
    role: Role | None = None,
    max_unavailable: int | None = None,
    evacuate: bool = False,
) -> tuple[Plan, ApplyResult | None]:
    """Observe, plan, show, confirm, then apply, under the deploy lock. A rollback plans over
    the aliases as they will be and moves them only once confirmed."""
    from plex.services.deploy import (
        apply_plan,
        move_aliases,
        observe_for_plan,
        plan_observed,
        rollback_moves,
        rolled_back,
    )
    from plex.store.lock import plex_lock

    with plex_lock(p.name, "deploy"):
        observed = observe_for_plan(p, incus, evacuate)
        moves = rollback_moves(p, observed, role) if rollback else []
        plan = plan_observed(
            p,
            rolled_back(observed, moves),
            replace=replace,
            force=force,
            max_unavailable=max_unavailable,
            evacuate=evacuate,
        )
        for m in moves:
            ui.info(f"{p.name}/{m.role}: {str(m.from_digest)[:12]} -> {m.to_digest[:12]}")
        render(plan, err=as_json)
        if plan.empty and not moves:
            return plan, None
        what = (
            f"apply {len(plan.waves)} wave(s)"
            + (f" after deleting {len(plan.stale)} stale copies" if plan.stale else "")
            if not plan.empty
            else "move the aliases"
        )
        confirm_or_refuse(f"{verb} {p.name}: {what}?", yes, "not applied")
        move_aliases(incus, moves)
        if plan.empty:
            return plan, None
        with ui.node_progress() as report:
            result = apply_plan(
                p, incus, plan, project_root(), parallel=parallel, report=report, force=force
            )
    return plan, result


def _report(plan: Plan, result: ApplyResult | None, as_json: bool, started: float) -> None:
    if as_json:
        ui.print_json(
            {
                "plan": plan.to_json(),
                "result": result.to_json() if result else None,
                "seconds": round(time.monotonic() - started, 2),
            }
        )
        return
    if result is None:
        return
    ui.table(
        "waves",
        ["wave", "nodes", "seconds", "probes"],
        [[w.index, ", ".join(w.nodes), f"{w.seconds:.1f}", len(w.probes)] for w in result.waves],
    )
    ui.info(f"[green]done[/green] in {time.monotonic() - started:.1f}s")


@app.command("deploy")
def deploy_cli(
    plex: PlexArg,
    replace: ReplaceOpt = None,
    yes: YesOpt = False,
    parallel: ParallelOpt = 0,
    force: ForceOpt = False,
    max_unavailable: MaxUnavailableOpt = None,
    evacuate: EvacuateOpt = False,
    snapshot: Annotated[
        bool,
        typer.Option(
            "--snapshot",
            help="then keep the healthy result as the pristine snapshot (plex reset --to pristine)",
        ),
    ] = False,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Plan, confirm, then converge the plex in health-gated waves."""
    as_json = check_output(output)
    started = time.monotonic()
    p = get_plex(plex)
    plan, result = run_deploy(
        p,
        _connect(p),
        replace or [],
        yes,
        parallel,
        force,
        as_json,
        max_unavailable=max_unavailable,
        evacuate=evacuate,
    )
    _report(plan, result, as_json, started)
    if snapshot:
        _snapshot(p, parallel, as_json)


def _snapshot(p: Plex, parallel: int, as_json: bool) -> None:
    from plex.services.snapshot import take_snapshot

    with ui.node_progress() as report:
        result = take_snapshot(p, _connect(p), project_root(), report, parallel)
    if as_json:
        ui.print_json(result.to_json())
    else:
        ui.info(
            f"[green]pristine snapshot {result.snapshot}[/green] of "
            f"{len(result.nodes)} nodes in {result.seconds:.1f}s"
        )


@app.command("snapshot")
def snapshot_cli(
    plex: PlexArg,
    parallel: ParallelOpt = 0,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Keep the deployed, healthy plex as copy-on-write snapshots of every node (kube nodes
    stopped together, so etcd is consistent): the state `plex reset --to pristine` restores."""
    _snapshot(get_plex(plex), parallel, check_output(output))


@app.command("reset")
def reset_cli(
    plex: PlexArg,
    yes: YesOpt = False,
    parallel: ParallelOpt = 0,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="'pristine': restore the snapshot `plex snapshot` kept, in "
            "seconds, instead of the cascade",
            metavar="pristine",
        ),
    ] = None,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Fast lab reset: replace the master and everything depending on it, same images (or,
    with --to pristine, restore every node's pristine snapshot)."""
    as_json = check_output(output)
    started = time.monotonic()
    p = get_plex(plex)
    if to is not None:
        _reset_to(p, to, yes, parallel, as_json)
        return
    plan, result = run_deploy(
        p, _connect(p), ["master"], yes, parallel, False, as_json, verb="reset"
    )
    _report(plan, result, as_json, started)


def _reset_to(p: Plex, to: str, yes: bool, parallel: int, as_json: bool) -> None:
    from plex.services.snapshot import reset_to

    confirm_or_refuse(f"reset {p.name} to its {to} snapshot (every node)?", yes, "not reset")
    with ui.node_progress() as report:
        result = reset_to(p, _connect(p), project_root(), to, report, parallel)
    if as_json:
        ui.print_json(result.to_json())
        return
    # Milestones of a run where tiers overlap: when the last node of each got there.
    ui.table(
        "reset milestones",
        ["reached", "at (s)"],
        [[k, f"{v:.1f}"] for k, v in sorted(result.phases.items(), key=lambda kv: kv[1])],
    )
    ui.info(f"[green]reset to {to} ({result.snapshot})[/green] in {result.seconds:.1f}s")


@app.command("destroy")
def destroy_cli(
    plex: PlexArg,
    all_: Annotated[
        bool, typer.Option("--all", help="also delete the registry cache volume")
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Delete every instance the plex owns (never anything else); keeps the registry cache."""
    from plex.services.destroy import destroy

    p = get_plex(plex)
    docker = None
    if p.registry.runtime is Runtime.DOCKER:
        from plex.backends.docker import SdkDocker

        docker = SdkDocker()
    what = "instance and registry container" if docker else "instance"
    extra = " and its registry cache" if all_ else ""
    confirm_or_refuse(f"destroy every {what} of plex {p.name}{extra}?", yes, "not destroyed")
    removed = destroy(p, _connect(p), everything=all_, docker=docker)
    ui.info(f"removed {len(removed)}: {', '.join(removed) or 'nothing'}")


@app.command("rollback")
def rollback_cli(
    plex: PlexArg,
    role: Annotated[str | None, typer.Option(help="only this role")] = None,
    yes: YesOpt = False,
    parallel: ParallelOpt = 0,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Redeploy the previous image generation (of one role, or of every role)."""
    as_json = check_output(output)
    p = get_plex(plex)
    r = parse_role(p, role) if role is not None else None
    started = time.monotonic()
    plan, result = run_deploy(
        p, _connect(p), [], yes, parallel, False, as_json, verb="rollback", rollback=True, role=r
    )
    _report(plan, result, as_json, started)


@app.command("kubeconfig")
def kubeconfig_cli(plex: PlexArg) -> None:
    """Print the admin kubeconfig, its server pointing at the plex's VIP."""
    from plex.services.deploy import kubeconfig

    p = get_plex(plex)
    typer.echo(kubeconfig(p, _connect(p)), nl=False)


@app.command("inventory")
def inventory_cli(
    plex: PlexArg,
    output: Annotated[
        InventoryFormat,
        typer.Option("--output", "-o", help="yaml, json or genders", case_sensitive=False),
    ] = InventoryFormat.YAML,
) -> None:
    """An Ansible inventory of the plex grouped by role, or a genders database (-o genders)."""
    from plex.deploy.genders import genders
    from plex.services.deploy import inventory, inventory_yaml

    p = get_plex(plex)
    if output is InventoryFormat.JSON:
        ui.print_json(inventory(p))
    elif output is InventoryFormat.YAML:
        typer.echo(inventory_yaml(p), nl=False)
    else:
        typer.echo(genders(p), nl=False)
