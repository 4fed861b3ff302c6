"""Assemble the CLI: every command module registers itself on the shared app."""

from __future__ import annotations

import importlib
import pkgutil

from plex.cli import commands
from plex.cli.app import app

# Import every module in plex/cli/commands so each can add its commands; a new area is a new file.
for _mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
    importlib.import_module(f"plex.cli.commands.{_mod}")

__all__ = ["app"]
