"""Talking to the registry where its engine runs: curl inside the registry node (Incus), or HTTP
to the Docker host plus the engine's API for sizes and logs (Docker)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from plex.backends.docker import Docker
from plex.backends.incus.protocol import Incus
from plex.deploy.copies import live_instances
from plex.deploy.spec import registry_cache_path, registry_volume
from plex.errors import BackendError
from plex.model.plex import Plex
from plex.registry import distribution
from plex.services.registry.node import container_name, registry_node

_LOG_FILTER = r"scheduler entry for |\"GET /v2/[^ ]+/blobs/"
REPOSITORIES = "docker/registry/v2/repositories"


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no HTTP answer at all
    content_type: str = ""
    body: str = field(default="", repr=False)
    size: int = 0


class Cache(Protocol):
    """The registry cache as seen from where its engine runs."""

    def get(self, port: int, path: str, accept: str = "") -> Reply: ...
    def drain(self, port: int, path: str) -> Reply: ...
    def data_size(self) -> int | None: ...
    def tag_paths(self, upstream: str) -> str: ...
    def access_log(self, upstream: str) -> str: ...


def _parse_curl(stdout: str) -> Reply:
    """curl output: the body, then `-w`'s marker line, status and content type (`%%` is how
    -w spells a literal `%`)."""
    body, _, tail = stdout.rpartition("\n%PLEX%\n")
    code, _, ctype = tail.partition("\n")
    return Reply(
        int(code) if code.strip().isdigit() else 0, ctype.strip(), body, len(body.encode())
    )


class IncusCache:
    """curl and friends inside the registry node (the engine listens on its loopback too)."""

    def __init__(self, plex: Plex, incus: Incus, node: str | None = None) -> None:
        self.plex = plex
        self.incus = incus
        if node is None:
            # The registry node's serving instance: an evacuated copy while its member is down.
            name = registry_node(plex).name
            node = live_instances(incus.observe(plex.name), [name]).get(name, name)
        self.node = node

    def _exec(self, argv: list[str]) -> str:
        res = self.incus.exec(self.node, argv)
        if res.returncode != 0:
            raise BackendError(
                f"{self.node}: {argv[0]} exited with {res.returncode}: {res.output[-200:]}"
            )
        return res.stdout

    def get(self, port: int, path: str, accept: str = "") -> Reply:
        argv = [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-w",
            "\n%%PLEX%%\n%{http_code}\n%{content_type}",
        ]
        if accept:
            argv += ["-H", f"Accept: {accept}"]
        res = self.incus.exec(self.node, [*argv, f"http://127.0.0.1:{port}{path}"])
        return _parse_curl(res.stdout)

    def drain(self, port: int, path: str) -> Reply:
        res = self.incus.exec(
            self.node,
            [
                "curl",
                "-sS",
                "--max-time",
                "3600",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                f"http://127.0.0.1:{port}{path}",
            ],
        )
        code, _, size = res.stdout.strip().partition(" ")
        return Reply(int(code) if code.isdigit() else 0, size=int(size) if size.isdigit() else 0)

    def data_size(self) -> int | None:
        out = self._exec(["du", "-sb", registry_cache_path(self.plex)])
        first = out.split()[0] if out.split() else ""
        return int(first) if first.isdigit() else None

    def tag_paths(self, upstream: str) -> str:
        root = f"{distribution.ROOT_DIRECTORY}/{upstream}/{REPOSITORIES}"
        res = self.incus.exec(
            self.node, ["find", root, "-type", "d", "-path", "*/_manifests/tags/*/current"]
        )
        return res.stdout  # nothing cached yet: find fails on the missing root, no paths

    def access_log(self, upstream: str) -> str:
        # Filtered on the node: the journal of a busy cache is large.
        return self._exec(
            [
                "sh",
                "-c",
                'journalctl -u "$1" -o cat --no-pager | grep -E "$2" || true',
                "sh",
                distribution.unit_name(upstream),
                _LOG_FILTER,
            ]
        )


class DockerCache:
    """HTTP to the registry's address (the Docker host, where the nodes pull from); sizes and
    logs through the engine's API."""

    def __init__(
        self, plex: Plex, docker: Docker, host: str | None = None, timeout: float = 120.0
    ) -> None:
        self.plex = plex
        self.docker = docker
        self.host = host or registry_node(plex).address
        self.timeout = timeout

    def _url(self, port: int, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}{path}"

    def _open(
        self, port: int, path: str, accept: str, sink: Callable[[Any], tuple[str, int]]
    ) -> Reply:
        req = urllib.request.Request(self._url(port, path))  # noqa: S310 - always http://
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                body, size = sink(resp)
                return Reply(resp.status, resp.headers.get("Content-Type", ""), body, size)
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.headers.get("Content-Type", "") if e.headers else "")
        except (urllib.error.URLError, OSError):
            return Reply(0)  # no HTTP answer at all, as curl reports it on the Incus side

    def get(self, port: int, path: str, accept: str = "") -> Reply:
        def read(resp: Any) -> tuple[str, int]:
            raw: bytes = resp.read()
            return raw.decode(errors="replace"), len(raw)

        return self._open(port, path, accept, read)

    def drain(self, port: int, path: str) -> Reply:
        def count(resp: Any) -> tuple[str, int]:
            total = 0
            while chunk := resp.read(1 << 20):
                total += len(chunk)
            return "", total

        return self._open(port, path, "", count)

    def data_size(self) -> int | None:
        return self.docker.volume_size(registry_volume(self.plex))

    def tag_paths(self, upstream: str) -> str:
        root = f"{distribution.ROOT_DIRECTORY}/{upstream}/{REPOSITORIES}"
        try:
            res = self.docker.exec(
                container_name(self.plex, upstream),
                ["find", root, "-type", "d", "-path", "*/_manifests/tags/*/current"],
            )
        except BackendError:
            return ""
        return res.stdout

    def access_log(self, upstream: str) -> str:
        text = self.docker.logs(container_name(self.plex, upstream))
        return "\n".join(line for line in text.splitlines() if re.search(_LOG_FILTER, line))
