"""Progress reports: a use case says what it is doing through a callback the CLI renders."""

from __future__ import annotations


def unreported(*_: object) -> None:
    """The report of work nobody watches (library use, tests): fits every report callback."""
