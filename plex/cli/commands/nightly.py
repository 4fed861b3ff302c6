"""plex nightly: rebuild the staging plex, smoke-check it, promote what passed to stable."""

from __future__ import annotations

from typing import Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex
from plex.errors import UsageError
from plex.plexfile.home import project_root


@app.command("nightly")
def nightly_cli(
    plex: PlexArg,
    keep: Annotated[
        int | None,
        typer.Option(
            help="image generations per role kept by prune (default: the plex's nightly.keep)"
        ),
    ] = None,
    parallel: Annotated[int, typer.Option(help="roles baked at once")] = 4,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Bake every role (latest), deploy --replace master, smoke-check, promote to stable, prune.

    Any failure leaves stable untouched and exits non-zero; the report (JSON + HTML) is
    written under the state dir either way.
    """
    from plex.backends.incus.client import connect
    from plex.services.nightly import Nightly

    as_json = check_output(output)
    if keep is not None and keep < 1:
        raise UsageError(f"--keep must be 1 or more, not {keep}")
    p = get_plex(plex)

    def say(step: str, msg: str) -> None:
        if as_json:
            return
        if msg in ("ok", "failed"):
            mark = "[green]✓[/green]" if msg == "ok" else "[red]✗[/red]"
            ui.info(f"{mark} {step}")
        elif msg == "start":
            ui.info(f"[bold]{step}[/bold]")
        else:
            ui.info(f"  [dim]{step}: {msg.replace('[', '(')}[/dim]")

    run = Nightly(p, connect(p.incus), project_root(), keep=keep, parallel=parallel, say=say).run()
    if as_json:
        ui.print_json(run.to_json() | {"report_html": str(run.report_html)})
    else:
        ui.table(
            f"nightly {p.name} {run.run_id}",
            ["step", "status", "seconds"],
            [[s.name, s.status, f"{s.seconds:.1f}"] for s in run.steps],
        )
        ui.info(f"report: {run.report_html}")
    run.raise_for_failure()
