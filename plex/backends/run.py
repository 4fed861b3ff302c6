"""The one place plex starts subprocesses: argv lists only, never shell strings.

Kept small so every external command can be logged (`+ argv`) and explained the same way.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from plex.errors import CommandError

log = logging.getLogger("plex.run")


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv to completion, capturing output; raise CommandError on failure when check."""
    args = [str(a) for a in argv]
    log.debug("+ %s", shlex.join(args))
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(
        args, capture_output=True, env=full_env, cwd=cwd, input=input, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        out = (proc.stderr or b"").decode(errors="replace") or (proc.stdout or b"").decode(
            errors="replace"
        )
        raise CommandError(args, proc.returncode, out)
    return proc


class Streamed:
    """A running process whose combined output is read line by line (used for Packer)."""

    def __init__(
        self,
        argv: Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        log.debug("+ %s", shlex.join(self.argv))
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
            cwd=cwd,
            text=True,
            # A tool's odd byte must not crash the reader: decode what can't be, replaced.
            errors="replace",
            bufsize=1,
            # Own process group: Ctrl-C reaches plex first, which then stops the child cleanly.
            start_new_session=True,
        )

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            yield line.rstrip("\n")

    def wait(self) -> int:
        return self.proc.wait()

    def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM the child's group, then SIGKILL after `grace` seconds."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        except ProcessLookupError:
            pass
