"""One error tree for plex.

Every failure a user can cause or fix is a PlexError: the CLI prints it as one line (plus an
optional hint) and exits with its `exit_code`, never with a traceback. Anything else reaching the
CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class PlexError(Exception):
    """Base of every expected failure. `hint` tells the user what to do next.

    A subclass names its exit code on its class line (`class X(PlexError, exit_code=3)`);
    without one it exits as its base does.
    """

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(PlexError, exit_code=2):
    """A plex file (or another user-edited file) is invalid. Names the file and the field path."""

    def __init__(
        self,
        file: str,
        path: str,
        problem: str,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.path = path
        self.problem = problem
        self.line = line
        where = f"{file}:{line}" if line else file
        field = f" {path}:" if path else ""
        super().__init__(f"{where}:{field} {problem}", hint)


class ConfigErrors(PlexError, exit_code=2):
    """Several ConfigErrors found in one pass; printed one per line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.message for e in errors))


class UsageError(PlexError, exit_code=2):
    """The command line names something that does not exist (a node, a role, a plex)."""


class BackendError(PlexError, exit_code=3):
    """Incus, Packer, Docker or a subprocess failed."""


class CommandError(BackendError):
    """A subprocess exited non-zero; carries argv and the tail of its output."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        tail = output.strip().splitlines()[-1] if output.strip() else "no output"
        super().__init__(f"{argv[0]} exited with {returncode}: {tail}")


class DownloadError(PlexError, exit_code=3):
    """A release artifact could not be fetched or failed its checksum."""


class ArtifactError(PlexError, exit_code=4):
    """An exported image artifact is corrupt or does not match its manifest."""


class ProbeError(PlexError, exit_code=5):
    """A health probe timed out: names the node, the probe and its last output."""


class LockedError(PlexError, exit_code=6):
    """Another plex process holds the lock for this plex."""


class PlanRefused(PlexError, exit_code=7):
    """The plan is unsafe (for example it would lose etcd quorum) and --force was not given."""


class Interrupted(PlexError, exit_code=130):
    """Ctrl-C or SIGTERM: raised from the signal handler so cleanup code runs."""
