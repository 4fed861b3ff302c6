"""Assemble the CLI: every command module registers itself on the shared app."""

from __future__ import annotations

import copy
import importlib
import pkgutil

import typer

from plex.cli import commands
from plex.cli.app import app

# Import every module in plex/cli/commands so each can add its commands; a new area is a new file.
for _mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
    importlib.import_module(f"plex.cli.commands.{_mod}")


def app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command (or command group) `argv` names, when it names one.

    typer turns every registered command into a click command, reading each function's
    signature and types, before it parses anything: for `plex validate` that is the other
    twenty-odd commands' worth of start-up for nothing. Help, `--version`, an unknown command
    (whose error suggests the known ones) get the whole app."""
    name = argv[0] if argv else ""
    only = copy.copy(app)
    only.registered_commands = [c for c in app.registered_commands if c.name == name]
    only.registered_groups = [g for g in app.registered_groups if g.name == name]
    return only if only.registered_commands or only.registered_groups else app


__all__ = ["app", "app_for"]
