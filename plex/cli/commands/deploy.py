"""plex deploy / reset / destroy / rollback / status / kubeconfig / inventory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, app, check_output, get_plex
from plex.cli.commands.bake import project_root
from plex.deploy.genders import genders
from plex.errors import UsageError
from plex.model.plex import Plex, Role

if TYPE_CHECKING:  # the deploy engine (and pylxd) load only when a command runs
    from plex.deploy.plan import Plan
    from plex.services.apply import ApplyResult

ReplaceOpt = Annotated[list[str] | None, typer.Option(
    "--replace", "-r", help="replace NODE (or master, or all) and everything depending on it",
    metavar="NODE")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask before applying")]
ParallelOpt = Annotated[int, typer.Option(help="nodes created at once inside a wave")]
ForceOpt = Annotated[bool, typer.Option(help="apply a plan that loses etcd quorum")]


def show_plan(plan: Plan) -> None:
    if plan.empty:
        ui.info(f"[green]plan for {plan.plex}: no changes[/green]")
        return
    ui.table(f"plan for {plan.plex} (project {plan.project})", ["", "node", "action", "reason"],
             plan.render_rows())
    for i, wave in enumerate(plan.waves, 1):
        ui.info(f"  wave {i}: {', '.join(a.node for a in wave)}")
    for note in plan.notes:
        ui.warn(note)


def _connect(p: Plex):  # type: ignore[no-untyped-def]
    from plex.backends.incus import connect

    return connect(p.incus)


def run_deploy(p: Plex, replace: list[str], yes: bool, parallel: int, force: bool,
               as_json: bool, verb: str = "deploy") -> tuple[Plan, ApplyResult | None]:
    from plex.services.deploy import apply_plan, make_deploy_plan
    from plex.store.lock import plex_lock

    incus = _connect(p)
    with plex_lock(p.name, "deploy"):
        plan, _ = make_deploy_plan(p, incus, replace, force)
        if not as_json:
            show_plan(plan)
        if plan.empty:
            return plan, None
        if not yes and not ui.confirm(f"{verb} {p.name}: apply {len(plan.waves)} wave(s)?"):
            raise UsageError("not applied", hint="re-run with --yes to apply without asking")
        with ui.progress() as prog:
            tasks: dict[str, ui.TaskID] = {}

            def report(node: str, msg: str) -> None:
                if node not in tasks:
                    tasks[node] = prog.add_task(msg, label=node, total=None)
                prog.update(tasks[node], description=msg)

            result = apply_plan(p, incus, plan, project_root(), parallel, report)
            for t in tasks.values():
                prog.update(t, total=1, completed=1)
    return plan, result


def _report(plan: Plan, result: ApplyResult | None, as_json: bool, started: float) -> None:
    if as_json:
        ui.print_json({"plan": plan.to_json(), "result": result.to_json() if result else None,
                       "seconds": round(time.monotonic() - started, 2)})
        return
    if result is None:
        return
    ui.table("waves", ["wave", "nodes", "seconds", "probes"], [
        [w.index, ", ".join(w.nodes), f"{w.seconds:.1f}", len(w.probes)] for w in result.waves])
    ui.info(f"[green]done[/green] in {time.monotonic() - started:.1f}s")


@app.command("deploy")
def deploy_cli(plex: Annotated[str, typer.Argument(help="plex name or file")],
               replace: ReplaceOpt = None, yes: YesOpt = False, parallel: ParallelOpt = 8,
               force: ForceOpt = False, output: OutputOpt = "table") -> None:
    """Plan, confirm, then converge the plex in health-gated waves."""
    as_json = check_output(output)
    started = time.monotonic()
    plan, result = run_deploy(get_plex(plex), replace or [], yes or as_json, parallel, force,
                              as_json)
    _report(plan, result, as_json, started)


@app.command("reset")
def reset_cli(plex: Annotated[str, typer.Argument(help="plex name or file")],
              yes: YesOpt = False, parallel: ParallelOpt = 8,
              output: OutputOpt = "table") -> None:
    """Fast lab reset: replace the master and everything depending on it, same images."""
    as_json = check_output(output)
    started = time.monotonic()
    plan, result = run_deploy(get_plex(plex), ["master"], yes or as_json, parallel, False,
                              as_json, verb="reset")
    _report(plan, result, as_json, started)


@app.command("destroy")
def destroy_cli(plex: Annotated[str, typer.Argument(help="plex name or file")],
                all_: Annotated[bool, typer.Option("--all", help="also delete the registry "
                                                   "cache volume")] = False,
                yes: YesOpt = False) -> None:
    """Delete every instance the plex owns (never anything else); keeps the registry cache."""
    from plex.services.deploy import destroy

    p = get_plex(plex)
    if not yes and not ui.confirm(f"destroy every instance of plex {p.name}?"):
        raise UsageError("not destroyed", hint="re-run with --yes")
    removed = destroy(p, _connect(p), everything=all_)
    ui.info(f"removed {len(removed)}: {', '.join(removed) or 'nothing'}")


@app.command("rollback")
def rollback_cli(plex: Annotated[str, typer.Argument(help="plex name or file")],
                 role: Annotated[str | None, typer.Option(help="only this role")] = None,
                 yes: YesOpt = False, parallel: ParallelOpt = 8,
                 output: OutputOpt = "table") -> None:
    """Redeploy the previous image generation (of one role, or of every role)."""
    from plex.services.deploy import rollback_aliases

    as_json = check_output(output)
    p = get_plex(plex)
    r = Role(role) if role else None
    moved = rollback_aliases(p, _connect(p), r)
    for m in moved:
        ui.info(f"{p.name}/{m.role}: {str(m.from_digest)[:12]} -> {m.to_digest[:12]}")
    started = time.monotonic()
    plan, result = run_deploy(p, [], yes or as_json, parallel, False, as_json, verb="rollback")
    _report(plan, result, as_json, started)


@app.command("status")
def status_cli(plex: Annotated[str, typer.Argument(help="plex name or file")],
               output: OutputOpt = "table") -> None:
    """Nodes, role, state, readiness and image digest against the newest image."""
    from plex.services.deploy import bootstrap_rows, status_rows

    as_json = check_output(output)
    p = get_plex(plex)
    incus = _connect(p)
    rows = status_rows(p, incus)
    boot = bootstrap_rows(p, incus)
    if as_json:
        ui.print_json({"plex": p.name, "nodes": rows, "bootstrap": boot})
        return
    ui.table(f"status of {p.name}", ["node", "role", "address", "state", "ready", "image",
                                     "current"], [
        [r["node"], r["role"], r["address"], r["state"], "yes" if r["ready"] else "no",
         r["image"] or "-", "yes" if r["up_to_date"] else f"no ({r['current_image']})"]
        for r in rows])
    if boot:
        ui.table(f"bootstrap manifests of {p.name} (RKE2 auto-deploy)",
                 ["manifest", "addon", "sha256", "state"],
                 [[b["manifest"], b["addon"], b["sha256"], b["state"]] for b in boot])


@app.command("kubeconfig")
def kubeconfig_cli(plex: Annotated[str, typer.Argument(help="plex name or file")]) -> None:
    """Print the admin kubeconfig, its server pointing at the plex's VIP."""
    from plex.services.deploy import kubeconfig

    p = get_plex(plex)
    typer.echo(kubeconfig(p, _connect(p)), nl=False)


@app.command("inventory")
def inventory_cli(plex: Annotated[str, typer.Argument(help="plex name or file")],
                  output: Annotated[str, typer.Option("--output", "-o",
                                                      help="yaml, json or genders")] = "yaml",
                  ) -> None:
    """An Ansible inventory of the plex grouped by role, or a genders database (-o genders)."""
    from plex.services.deploy import inventory, inventory_yaml

    p = get_plex(plex)
    if output == "json":
        ui.print_json(inventory(p))
    elif output == "yaml":
        typer.echo(inventory_yaml(p), nl=False)
    elif output == "genders":
        typer.echo(genders(p), nl=False)
    else:
        raise UsageError(f"--output must be yaml, json or genders, not '{output}'")
