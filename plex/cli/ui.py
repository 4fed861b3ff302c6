"""The only module that imports rich: console, step timers, tables, progress, JSON output.

One-line messages with no markup of their own (`ok`, `warn`, `error`) are written by typer's
click, which the CLI has loaded already: `plex validate` and every error then start without rich
(~15 ms, bench/cli.py). Once rich's console exists (a table, a progress display that may still
be live), they go through it like every other line, so nothing is written across a display.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


# rich loads on first output: `plex --help` prints through click and needs none of it (~40 ms
# of start-up, bench/cli.py).
@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _err() -> Console:
    return _console(True)


def escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def print_json(data: Any) -> None:
    # Plain stdout, not rich: JSON must be machine-readable byte for byte.
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], err: bool = False
) -> None:
    """A table on stdout, or on stderr (`err`) when stdout carries JSON."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    # Piped output has no width: rich would assume 80 columns and cut names to "omniplex-serv…",
    # which breaks `plex show | grep`. Let the table take the width it needs.
    # (print(width=...) is capped at the console's width, hence a console for this table.)
    base = _console(err)
    out = base if base.is_terminal else Console(file=base.file, width=250, highlight=False)
    out.print(t)


def info(message: str) -> None:
    # One message, one line: wrapping at 80 columns would split paths in logs and pipes.
    _err().print(message, soft_wrap=True)


def _color() -> bool | None:
    """rich's colour choice for the lines click writes: NO_COLOR and a dumb terminal turn it
    off, FORCE_COLOR on; otherwise colour on a terminal only (click's own rule)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return False if os.environ.get("TERM") in ("dumb", "unknown") else None


def _line(mark: str, style: str, text: str, indent: str = "") -> None:
    """One line on stderr: `mark` in `style` (a colour, or "dim" for the whole line), then
    `text` as it is (it quotes user input: no markup), never wrapped."""
    if _console.cache_info().currsize:  # rich is in use: keep to its console
        from rich.text import Text

        line = Text(indent)
        line.append(mark, style)
        line.append(f" {text}", "dim" if style == "dim" else "")
        _err().print(line, soft_wrap=True)
        return
    import typer  # loaded already: the CLI runs on it

    if style == "dim":
        out = typer.style(f"{mark} {text}", dim=True)
    else:
        out = typer.style(mark, fg=style) + f" {text}"
    typer.echo(indent + out, err=True, color=_color())


def ok(message: str) -> None:
    """A check that passed: a green ✓, then the message."""
    _line("✓", "green", message)


def warn(message: str) -> None:
    _line("warning:", "yellow", message)


def error(message: str, hint: str | None = None) -> None:
    _line("error:", "red", message)
    if hint:
        _line("hint:", "dim", hint, indent="  ")


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
            _err().print(f"{mark} {title} [dim]{time.monotonic() - start:.1f}s[/dim]")


def progress() -> Progress:
    """A progress display for parallel work (one task per role or node)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[label]:<14}"),
        BarColumn(bar_width=20),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=_err(),
        transient=False,
    )


K = TypeVar("K", bound=Hashable)


@contextmanager
def progress_by(
    label: Callable[[K], str], keys: Iterable[K] = ()
) -> Iterator[Callable[[K, str], None]]:
    """Progress for parallel work, one line per key (a node, a role): `report(key, message)`.

    A key's line is added on its first message, or up front as "queued" for `keys`; every line
    is marked done when the block ends without an error."""
    with progress() as prog:
        tasks = {k: prog.add_task("queued", label=label(k), total=None) for k in keys}

        def report(key: K, msg: str) -> None:
            if key in tasks:
                prog.update(tasks[key], description=msg)
            else:
                tasks[key] = prog.add_task(msg, label=label(key), total=None)

        yield report
        for t in tasks.values():
            prog.update(t, total=1, completed=1)


def _itself(name: str) -> str:
    return name


def node_progress() -> AbstractContextManager[Callable[[str, str], None]]:
    """`progress_by` nodes, each labelled with its name."""
    return progress_by(_itself)


def can_ask() -> bool:
    """A question needs a terminal to answer it on."""
    return sys.stdin.isatty()


def confirm(question: str) -> bool:
    if not can_ask():
        return False
    # escape: rich would take "[y/N]" (and brackets in the question) for markup and drop it.
    answer = _err().input(f"{escape(question)} {escape('[y/N]')} ")
    return answer.strip().lower() in ("y", "yes")
