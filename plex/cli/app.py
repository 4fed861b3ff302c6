"""The typer app and what every command shares: error handling, plex lookup, output format.

Command modules in plex/cli/commands/ register thin `*_cli` functions on `app` (or a sub-app):
parse arguments, call one plain function, render its result.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

import plex
from plex.cli import ui
from plex.errors import UsageError
from plex.model.enums import Role

if TYPE_CHECKING:
    from plex.model.plex import Plex

app = typer.Typer(
    name="plex",
    help="Bake Kubernetes node images and redeploy whole lab clusters on Incus, immutably.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help formatter imports rich.markdown and markdown-it,
    # half of `plex --help`'s start-up (bench/cli.py).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"plex {plex.__version__}")  # read on use: importlib.metadata is slow
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = None,
) -> None:
    """Bake Kubernetes node images and redeploy whole lab clusters on Incus, immutably."""


F = TypeVar("F", bound=Callable[..., Any])

PlexArg = Annotated[str, typer.Argument(help="plex name (plexes/<name>.yaml) or a path to one")]
OutputOpt = Annotated[
    ui.Output, typer.Option("--output", "-o", help="table or json", case_sensitive=False)
]


class InventoryFormat(StrEnum):
    YAML = "yaml"  # Ansible's YAML inventory
    JSON = "json"
    GENDERS = "genders"  # a genders database (pdsh -g, nodeattr)


def check_output(value: ui.Output) -> bool:
    """True for JSON output (typer has already refused a format that is not an Output)."""
    return value is ui.Output.JSON


def get_plex(name_or_path: str) -> Plex:
    from plex.plexfile.load import find_plex, load_plex

    return load_plex(find_plex(name_or_path))


def plex_path(name_or_path: str) -> Path:
    from plex.plexfile.load import find_plex

    return find_plex(name_or_path)


def parse_role(plex: Plex, value: str) -> Role:
    """A role the plex has nodes of, or a one-line usage error naming the ones it has."""
    have = [r.value for r, rc in plex.roles.items() if rc.count > 0]
    try:
        role = Role(value)
    except ValueError:
        raise UsageError(
            f"unknown role '{value}' (one of {', '.join(r.value for r in Role)})"
        ) from None
    if role.value not in have:
        raise UsageError(f"plex '{plex.name}' has no {value} nodes ({', '.join(have)})")
    return role
