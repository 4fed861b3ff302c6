"""The only module that imports rich: console, step timers, tables, progress, JSON output."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def print_json(data: Any) -> None:
    # Plain stdout, not rich: JSON must be machine-readable byte for byte.
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


def info(message: str) -> None:
    err_console.print(message)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def error(message: str, hint: str | None = None) -> None:
    err_console.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"  [dim]hint: {hint}[/dim]")


@contextmanager
def step(title: str, quiet: bool = False) -> Iterator[None]:
    """Time a named step and print it when done (or failed)."""
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        if not quiet:
            mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
            err_console.print(f"{mark} {title} [dim]{time.monotonic() - start:.1f}s[/dim]")


def progress() -> Progress:
    """A progress display for parallel work (one task per role or node)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[label]:<14}"),
        BarColumn(bar_width=20),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return err_console.input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
