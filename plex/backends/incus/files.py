"""Inside an instance: exec (recorded output, no websockets) and the file API.

File writes send Incus's own `X-Incus-mode/uid/gid` headers (Incus ignores pylxd's `X-LXD-*`);
the file API also works on a stopped instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from plex.backends.incus.protocol import ExecResult
from plex.backends.incus.rest import IncusRest
from plex.errors import BackendError

EXEC_ENV = {
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


# Incus's answer to an exec whose attach failed: forkexec exits before it sends the attached
# PID (cmd/incusd/main_forkexec.go: c->attach failed; driver_lxc.go Exec). The command never
# ran, so running it again is safe. Seen here on a loaded 2-core host with cgroup v1 (a
# `kubectl drain` of a rolling deploy failed on it once in a full test run).
UNATTACHED = "Failed to retrieve PID of executing child process"
ATTACH_RETRIES = (0.2, 0.5, 1.0, 2.0)  # seconds before each new try


def _write_headers(kind: str, mode: int, uid: int = 0, gid: int = 0) -> dict[str, str]:
    return {
        "X-Incus-type": kind,
        "X-Incus-mode": f"{mode:04o}",
        "X-Incus-uid": str(uid),
        "X-Incus-gid": str(gid),
    }


def attached(run: Callable[[], Any], sleep: Callable[[float], None] = time.sleep) -> Any:
    """`run()`, tried again while Incus could not attach the command (UNATTACHED)."""
    for delay in ATTACH_RETRIES:
        try:
            return run()
        except BackendError as e:
            if UNATTACHED not in e.message:
                raise
            sleep(delay)
    return run()


class Files(IncusRest):
    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult:
        body = {
            "command": argv,
            "environment": {**EXEC_ENV, **(env or {})},
            "wait-for-websocket": False,
            "record-output": True,
            "interactive": False,
        }
        meta = attached(
            lambda: self.sync(
                "POST", f"instances/{name}/exec", json=body, what=f"exec {argv[0]} in {name}"
            )
        )
        md = meta.get("metadata") or {}
        out: dict[str, str] = {}
        for fd, log_url in (md.get("output") or {}).items():
            path = log_url.split("/1.0/", 1)[-1]
            resp = self.request("GET", path, what=f"exec output of {name}")
            out[fd] = resp.content.decode(errors="replace") if resp is not None else ""
            # Logs pile up in the instance's log dir otherwise.
            self.request("DELETE", path, ok_missing=True)
        return ExecResult(int(md.get("return", -1)), out.get("1", ""), out.get("2", ""))

    def _stat(self, name: str, path: str, ok_missing: bool = False) -> Mapping[str, str] | None:
        """The file's X-Incus-* headers (type, mode, uid, gid; names case-insensitive, as HTTP
        has them); None when missing and allowed."""
        resp = self.request(
            "GET",
            f"instances/{name}/files",
            params={"path": path},
            ok_missing=ok_missing,
            what=f"stat {path} in {name}",
        )
        return None if resp is None else resp.headers

    def push_file(
        self, name: str, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        headers = {
            **_write_headers("file", mode, uid, gid),
            "X-Incus-write": "overwrite",
            "Content-Type": "application/octet-stream",
        }
        self.request(
            "POST",
            f"instances/{name}/files",
            params={"path": path},
            data=data,
            headers=headers,
            what=f"push {path} to {name}",
        )

    def make_dirs(self, name: str, path: str, mode: int = 0o755) -> None:
        """`mkdir -p` in the instance (also stopped) through the file API; existing ones kept."""
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            stat = self._stat(name, current, ok_missing=True)
            if stat is not None:
                if stat.get("X-Incus-type") != "directory":
                    raise BackendError(f"{name}: {current} exists and is not a directory")
                continue
            self.request(
                "POST",
                f"instances/{name}/files",
                params={"path": current},
                data=b"",
                headers=_write_headers("directory", mode),
                what=f"mkdir {current} in {name}",
            )

    def pull_file(self, name: str, path: str) -> bytes:
        resp = self.request(
            "GET", f"instances/{name}/files", params={"path": path}, what=f"pull {path} from {name}"
        )
        assert resp is not None
        return resp.content

    def file_mode(self, name: str, path: str) -> int:
        """The file's mode as Incus reports it (X-Incus-mode), to check what a push applied."""
        stat = self._stat(name, path)
        assert stat is not None
        return int(stat.get("X-Incus-mode", "0"), 8)

    def pin_hostname(self, name: str, hostname: str) -> None:
        """Make the created, not yet started instance `name` boot as `hostname`.

        Incus renders an image's templates at first start (trigger `create`): the one writing
        /etc/hostname gets `{{ instance.name }}`, so it is replaced in this instance's copy of
        the templates; /etc/hostname is also written for images without such a template."""
        meta = self.sync("GET", f"instances/{name}/metadata", what=f"metadata of {name}") or {}
        for path, tpl in (meta.get("templates") or {}).items():
            if path == "/etc/hostname" and tpl.get("template"):
                self.request(
                    "POST",
                    f"instances/{name}/metadata/templates",
                    params={"path": tpl["template"]},
                    data=f"{hostname}\n".encode(),
                    headers={"Content-Type": "application/octet-stream"},
                    what=f"hostname template of {name}",
                )
        self.push_file(name, "/etc/hostname", f"{hostname}\n".encode())
