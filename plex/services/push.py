"""Put a file on a node through the Incus file API, with its mode applied and read back.

The one way plex places private files on an instance (host keys, join token, VRRP password,
registry logins): Incus applies `X-Incus-mode`, and the mode is read back because an Incus that
ignored the header would leave a private key world-readable.
"""

from __future__ import annotations

from typing import Protocol

from plex.errors import BackendError


class FileTarget(Protocol):
    def push_file(
        self, name: str, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None: ...
    def file_mode(self, name: str, path: str) -> int: ...


def push_checked(
    incus: FileTarget, name: str, path: str, data: bytes, mode: int, gid: int = 0
) -> None:
    incus.push_file(name, path, data, mode=mode, gid=gid)
    got = incus.file_mode(name, path)
    if got != mode:
        raise BackendError(
            f"{name}: {path} has mode {got:04o}, not {mode:04o}",
            hint="this Incus ignored the file mode header",
        )
