"""plex validate / show / schema: the plex definition itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex
from plex.errors import ConfigErrors
from plex.plexfile.home import project_root

if TYPE_CHECKING:
    from plex.model.plex import Plex


@app.command("validate")
def validate_cli(
    files: Annotated[
        list[Path],
        typer.Argument(help="plex files to check (or a recipe, base image, probes or profile)"),
    ],
) -> None:
    """Check plex files and the bake/, images/ and deploy/ files they use: one line per problem
    (file:line: field: what is wrong), exit 2. A file in bake/, images/ or deploy/ given on its
    own is checked as what it is."""
    from plex.model import topology
    from plex.services.validate import validate  # the bake-time rules: not for `plex --help`

    result = validate(files, project_root())
    for w in result.warnings:
        ui.warn(w)
    if result.errors:
        raise ConfigErrors(result.errors)
    for path, what in result.data_files:
        ui.ok(f"{path}: {what}")
    for plex in result.plexes:
        ui.ok(f"{plex.source}: plex '{plex.name}', {len(topology.nodes(plex))} nodes")


def node_rows(plex: Plex) -> list[dict[str, Any]]:
    from plex.model import topology

    return [
        {
            "name": n.name,
            "role": n.role.value,
            "master": n.is_master,
            "address": n.address,
            "member": n.member,
            "virt": n.virt.value,
            "base": n.base,
            "image": f"{plex.name}/{n.role.value}",
        }
        for n in topology.nodes(plex)
    ]


@app.command("show")
def show_cli(plex: PlexArg, output: OutputOpt = ui.Output.TABLE) -> None:
    """Every node of a plex: name, role, address, placement member, image."""
    from plex.plexfile.checks import warnings

    as_json = check_output(output)
    p = get_plex(plex)
    rows = node_rows(p)
    if as_json:
        ui.print_json(
            {
                "plex": p.name,
                "project": p.incus.project,
                "network": {
                    "cidr": p.network.cidr,
                    "vip": p.network.vip,
                    "domain": p.network.domain,
                },
                "nodes": rows,
            }
        )
        return
    for w in warnings(p):
        ui.warn(f"{w.path}: {w.message}")
    ui.table(
        f"plex {p.name} · project {p.incus.project} · {p.network.cidr} · VIP {p.network.vip}",
        ["node", "role", "address", "member", "virt", "image"],
        [
            [
                r["name"] + (" (master)" if r["master"] else ""),
                r["role"],
                r["address"],
                r["member"] or "-",
                r["virt"],
                r["image"],
            ]
            for r in rows
        ],
    )


@app.command("schema")
def schema_cli() -> None:
    """Print the JSON Schema of plex files (for editor completion and validation)."""
    from plex.plexfile.load import json_schema

    ui.print_json(json_schema())
