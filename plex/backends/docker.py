"""Docker through the docker SDK: the registry cache for `registry.runtime: docker`.

Only what the registry needs: a named volume for the cache, and containers created from an
image with their config files copied in before they start. Config files go in through the
API (`put_archive`), never through a bind mount of a host file, so an upstream password is
never written to the host's disk by plex.

Containers use the host's network: nodes reach the registry at the address their mirrors name,
which for this runtime is the Docker host's; host networking needs neither NAT nor a bridge
network on the engine (an engine started with `--bridge=none` works too).

`Docker` is the Protocol the registry operations use; `SdkDocker` is the real one.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from plex.backends.incus.protocol import ExecResult
from plex.errors import BackendError

LABEL_PLEX = "plex.plex"
LABEL_SPEC = "plex.spec"  # digest of the ContainerSpec: same digest, container kept


@dataclass(frozen=True)
class ContainerFile:
    """A file copied into the container before it starts. Secret content never shows."""

    path: str
    content: bytes = field(repr=False)
    mode: int = 0o644
    secret: bool = False

    def __repr__(self) -> str:
        body = "<secret>" if self.secret else f"{len(self.content)} bytes"
        return f"ContainerFile({self.path!r}, mode={self.mode:04o}, {body})"


@dataclass(frozen=True)
class ContainerSpec:
    """One long-running container: image, command, volume mounts and files."""

    name: str
    image: str
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    volumes: Mapping[str, str]  # volume name -> mount path
    files: tuple[ContainerFile, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        """Changes when anything about the container would change (file contents included,
        hashed: the digest is a label anyone can read, the content is not)."""
        canonical = json.dumps(
            {
                "image": self.image,
                "entrypoint": self.entrypoint,
                "command": self.command,
                "volumes": dict(self.volumes),
                "labels": dict(self.labels),
                "files": [
                    [f.path, f.mode, hashlib.sha256(f.content).hexdigest()] for f in self.files
                ],
            },
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    status: str  # running, exited, created...
    image: str
    labels: Mapping[str, str]

    @property
    def running(self) -> bool:
        return self.status == "running"


class Docker(Protocol):
    """What the registry operations need from a Docker engine."""

    def volume_exists(self, name: str) -> bool: ...
    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool: ...
    def delete_volume(self, name: str) -> None: ...
    def volume_size(self, name: str) -> int | None: ...
    def has_image(self, image: str) -> bool: ...
    def pull_image(self, image: str) -> None: ...
    def containers(self, plex: str) -> list[ContainerInfo]: ...
    def run(self, spec: ContainerSpec) -> None: ...
    def remove(self, name: str) -> None: ...
    def exec(self, name: str, argv: Sequence[str]) -> ExecResult: ...
    def logs(self, name: str) -> str: ...


def _tar(files: Sequence[ContainerFile]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size = len(f.content)
            info.mode = f.mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(f.content))
    return raw.getvalue()


class SdkDocker:
    """The docker SDK over `base_url` (default: DOCKER_HOST, else the local socket)."""

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        import docker  # imported here: only the docker runtime needs the SDK loaded

        self._errors: tuple[type[Exception], ...] = (docker.errors.DockerException,)
        self._not_found = docker.errors.NotFound
        try:
            if base_url is None:
                self.client = docker.from_env(timeout=timeout)
            else:
                self.client = docker.DockerClient(base_url=base_url, timeout=timeout)
            self.client.ping()
        except docker.errors.DockerException as e:
            raise BackendError(
                f"cannot reach the Docker engine: {e}", hint="start dockerd, or set DOCKER_HOST"
            ) from None

    def _fail(self, what: str, e: Exception) -> BackendError:
        return BackendError(f"docker: {what}: {getattr(e, 'explanation', None) or e}")

    def _exists(self, collection: Any, name: str, what: str) -> bool:
        """Whether the engine holds `name` in `collection` (volumes, images)."""
        try:
            collection.get(name)
            return True
        except self._not_found:
            return False
        except self._errors as e:
            raise self._fail(f"inspect {what} {name}", e) from None

    # -- volumes ---------------------------------------------------------------------------

    def volume_exists(self, name: str) -> bool:
        return self._exists(self.client.volumes, name, "volume")

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        """Create the named volume if missing; True when it was created."""
        if self.volume_exists(name):
            return False
        try:
            self.client.volumes.create(name=name, labels=dict(labels))
        except self._errors as e:
            raise self._fail(f"create volume {name}", e) from None
        return True

    def delete_volume(self, name: str) -> None:
        try:
            self.client.volumes.get(name).remove()
        except self._not_found:
            return
        except self._errors as e:
            raise self._fail(f"delete volume {name}", e) from None

    def volume_size(self, name: str) -> int | None:
        """Bytes used by the volume, from `docker system df` (None when the engine does not
        say; df is slow on big engines, but it is the only API that measures a volume)."""
        try:
            df = self.client.df()
        except self._errors as e:
            raise self._fail("system df", e) from None
        for v in df.get("Volumes") or []:
            if v.get("Name") == name:
                size = (v.get("UsageData") or {}).get("Size")
                return int(size) if isinstance(size, int) and size >= 0 else None
        return None

    # -- images ----------------------------------------------------------------------------

    def has_image(self, image: str) -> bool:
        return self._exists(self.client.images, image, "image")

    def pull_image(self, image: str) -> None:
        repo, _, tag = image.rpartition(":")
        if "/" in tag or not repo:
            repo, tag = image, "latest"
        try:
            self.client.images.pull(repo, tag=tag)
        except self._errors as e:
            raise self._fail(f"pull {image}", e) from None

    # -- containers ------------------------------------------------------------------------

    def containers(self, plex: str) -> list[ContainerInfo]:
        try:
            found = self.client.containers.list(all=True, filters={"label": f"{LABEL_PLEX}={plex}"})
        except self._errors as e:
            raise self._fail("list containers", e) from None
        out = []
        for c in found:
            attrs: dict[str, Any] = c.attrs
            out.append(
                ContainerInfo(
                    name=c.name,
                    status=c.status,
                    image=str(attrs.get("Config", {}).get("Image", "")),
                    labels=dict(attrs.get("Config", {}).get("Labels") or {}),
                )
            )
        return out

    def run(self, spec: ContainerSpec) -> None:
        """Create the container, copy its files in, start it (restarting with the engine)."""
        labels = {**spec.labels, LABEL_SPEC: spec.digest()}
        try:
            c = self.client.containers.create(
                spec.image,
                name=spec.name,
                entrypoint=list(spec.entrypoint),
                command=list(spec.command),
                labels=labels,
                network_mode="host",
                restart_policy={"Name": "unless-stopped"},
                volumes={vol: {"bind": path, "mode": "rw"} for vol, path in spec.volumes.items()},
                detach=True,
            )
            if spec.files and not c.put_archive("/", _tar(spec.files)):
                raise BackendError(f"docker: copying files into {spec.name} failed")
            c.start()
        except self._errors as e:
            raise self._fail(f"run {spec.name}", e) from None

    def remove(self, name: str) -> None:
        try:
            self.client.containers.get(name).remove(force=True)
        except self._not_found:
            return
        except self._errors as e:
            raise self._fail(f"remove {name}", e) from None

    def exec(self, name: str, argv: Sequence[str]) -> ExecResult:
        try:
            res = self.client.containers.get(name).exec_run(list(argv), demux=True)
        except self._errors as e:
            raise self._fail(f"exec {argv[0]} in {name}", e) from None
        out, err = res.output if isinstance(res.output, tuple) else (res.output, b"")
        return ExecResult(
            int(res.exit_code or 0),
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    def logs(self, name: str) -> str:
        try:
            raw: bytes = self.client.containers.get(name).logs(stdout=True, stderr=True)
        except self._errors as e:
            raise self._fail(f"logs of {name}", e) from None
        return raw.decode(errors="replace")
