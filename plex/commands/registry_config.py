"""plex registry ...: the plex's pull-through cache. `config` prints the engine's rendered config.

`registry_app` is the sub-app other registry commands (up, warm, stats) register on.
Nothing printed here ever carries an upstream password: configs are rendered without
credentials (zot keeps them in a separate file anyway).
"""

from __future__ import annotations

from typing import Annotated

import typer

from plex import ui
from plex.cli_app import PlexArg, app, get_plex
from plex.config import Engine
from plex.errors import UsageError
from plex.registry import mirrors
from plex.registry.distribution import distribution_proxies
from plex.registry.zot import zot_config

registry_app = typer.Typer(
    name="registry",
    help="The plex's pull-through registry cache.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


@registry_app.command("config")
def config_cli(
    plex: PlexArg,
    upstream: Annotated[
        str | None,
        typer.Option("--upstream", "-u", help="distribution: print only this upstream's config",
                     metavar="NAME"),
    ] = None,
    nodes: Annotated[
        bool, typer.Option("--nodes", help="print the node side instead: RKE2 registries.yaml")
    ] = False,
) -> None:
    """Print the registry engine's rendered config as JSON (never with passwords).

    zot: its config.json. distribution: one config per upstream keyed by systemd unit, or only
    one with --upstream. --nodes: the RKE2 registries.yaml the nodes get.
    """
    p = get_plex(plex)
    if nodes:
        ui.print_json(mirrors.registries_yaml(p))
        return
    if p.registry.engine is Engine.ZOT:
        if upstream is not None:
            raise UsageError("--upstream is for the distribution engine (zot serves all at once)")
        ui.print_json(zot_config(p))
        return
    proxies = distribution_proxies(p)
    if upstream is not None:
        match = [x for x in proxies if x.upstream.name == upstream]
        if not match:
            raise UsageError(f"plex '{p.name}' has no registry upstream '{upstream}'",
                             hint="upstreams: " + ", ".join(x.upstream.name for x in proxies))
        ui.print_json(match[0].config)
        return
    ui.print_json({x.unit_name: x.config for x in proxies})
