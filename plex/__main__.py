"""Entry point: logging and signal handling, then the CLI; PlexErrors become one clean line."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from plex.errors import ConfigErrors, Interrupted, PlexError


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # SIGTERM behaves like Ctrl-C: raise inside the main thread so `finally` blocks clean up
    # (transient build instances, half-written files, locks).
    raise Interrupted("interrupted by SIGTERM" if signum == signal.SIGTERM else "interrupted")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("PLEX_DEBUG") else logging.WARNING,
        format="%(name)s: %(message)s",
    )
    # Parallel bakes share pylxd's one-connection unix-socket pool: urllib3 warns about each
    # extra connection it opens and discards. Harmless; keep the terminal clean.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    import typer

    from plex.cli import app_for, ui

    args = sys.argv[1:] if argv is None else argv
    try:
        rv = app_for(args)(args=args, prog_name="plex", standalone_mode=False)
    except ConfigErrors as e:
        for err in e.errors:
            ui.error(err.message)
        return e.exit_code
    except PlexError as e:
        ui.error(e.message, e.hint)
        return e.exit_code
    except KeyboardInterrupt:
        ui.error("interrupted")
        return 130
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int | None) else 1
    except typer.Abort:
        ui.error("aborted")
        return 130
    except Exception as e:
        # Usage errors (unknown command, bad option) arrive here in non-standalone mode. They
        # are click's ClickException, which recent typer vendors as typer._click: recognise
        # them by their interface rather than by a module that may not be installed.
        show, code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(code, int):
            # A usage error is one line like every other error, with where to read more.
            ctx, fmt = getattr(e, "ctx", None), getattr(e, "format_message", None)
            if ctx is not None and callable(fmt):
                ui.error(
                    str(fmt()).replace("Value error, ", ""), f"see '{ctx.command_path} --help'"
                )
            else:
                show()
            return code
        raise
    # In non-standalone mode `raise typer.Exit(n)` comes back as the return value.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
