"""Incus through pylxd: an explicit socket or remote, one project per plex, every action waited for.

pylxd is used for its connection handling (unix socket, TLS client certs) and raw `api` node;
the calls plex needs are made against the REST API directly so that:
- every operation is waited for and its failure becomes a BackendError naming the instance;
- file pushes send Incus's own `X-Incus-mode/uid/gid` headers (Incus ignores pylxd's `X-LXD-*`);
- exec uses `record-output` instead of websockets, so it needs no websocket client.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pylxd
import requests
from pylxd import exceptions as lxd_exc
from requests_toolbelt.multipart.encoder import MultipartEncoder

from plex.errors import BackendError
from plex.model import owner
from plex.model.observed import Observed, ObservedInstance, owned
from plex.model.plex import IncusConfig
from plex.plexfile.crosscheck import Neighbour

DEFAULT_SOCKETS = ("/var/lib/incus/unix.socket", "/run/incus/unix.socket")


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


@dataclass(frozen=True)
class ImageInfo:
    fingerprint: str
    aliases: tuple[str, ...]
    properties: dict[str, str]
    size: int
    created_at: str


class Incus(Protocol):
    """What plex needs from Incus. `PylxdIncus` is the real one; tests may record calls."""

    project: str

    def ensure_project(self) -> None: ...
    def delete_project(self) -> None: ...
    def observe(self, plex: str) -> Observed: ...
    def observe_builds(self, plex: str) -> list[ObservedInstance]: ...
    def instance_names(self) -> list[str]: ...
    def neighbours(self, network: str) -> list[Neighbour]: ...
    def instance_config(self, name: str) -> dict[str, str]: ...
    def instance_state(self, name: str) -> dict[str, Any]: ...
    def create_instance(
        self,
        name: str,
        *,
        image: str,
        config: dict[str, str],
        devices: dict[str, dict[str, str]],
        profiles: list[str],
        virt: str = "container",
        target: str | None = None,
        source: dict[str, str] | None = None,
    ) -> None: ...
    def start(self, name: str) -> None: ...
    def stop(self, name: str, force: bool = True) -> None: ...
    def delete_instance(self, name: str) -> None: ...
    def snapshots(self, name: str) -> list[str]: ...
    def create_snapshot(self, name: str, snapshot: str) -> None: ...
    def delete_snapshot(self, name: str, snapshot: str) -> None: ...
    def restore_snapshot(self, name: str, snapshot: str) -> None: ...
    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult: ...
    def push_file(
        self, name: str, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None: ...
    def make_dirs(self, name: str, path: str, mode: int = 0o755) -> None: ...
    def pull_file(self, name: str, path: str) -> bytes: ...
    def file_mode(self, name: str, path: str) -> int: ...
    def set_config(self, name: str, config: dict[str, str]) -> None: ...
    def publish(
        self,
        name: str,
        *,
        aliases: list[str],
        properties: dict[str, str],
        compression: str = "zstd",
    ) -> str: ...
    def import_image(
        self, metadata: Path, rootfs: Path | None, properties: dict[str, str], vm: bool = False
    ) -> str: ...
    def export_image(self, fingerprint: str, dest: Path) -> list[Path]: ...
    def images(self) -> list[ImageInfo]: ...
    def image_by_alias(self, alias: str) -> ImageInfo | None: ...
    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None: ...
    def delete_alias(self, alias: str) -> None: ...
    def delete_image(self, fingerprint: str) -> None: ...
    def ensure_volume(
        self, pool: str, name: str, config: dict[str, str], target: str | None = None
    ) -> bool: ...
    def delete_volume(self, pool: str, name: str) -> None: ...
    def volume_exists(self, pool: str, name: str) -> bool: ...


def _socket_path(cfg: IncusConfig) -> str:
    if cfg.socket:
        return cfg.socket
    if env := os.environ.get("INCUS_SOCKET"):
        return env
    for cand in DEFAULT_SOCKETS:
        if Path(cand).exists():
            return cand
    return DEFAULT_SOCKETS[0]


def _names(urls: list[str] | None) -> list[str]:
    """Names from API URLs like /1.0/profiles/web?project=p."""
    return [u.split("?", 1)[0].rsplit("/", 1)[-1] for u in urls or []]


def _observed(inst: dict[str, Any]) -> ObservedInstance:
    """The snapshot of one instance: only plex's own config keys, never a lazy API object."""
    config = inst.get("config") or {}
    return ObservedInstance(
        name=inst["name"],
        status=inst.get("status", "Unknown"),
        uuid=config.get("volatile.uuid", ""),
        config={k: v for k, v in config.items() if k.startswith(owner.PREFIX)},
        location=inst.get("location") or None,
        type=inst.get("type", "container"),
    )


def _error_text(resp: requests.Response) -> str:
    try:
        data = resp.json()
        return str(data.get("error") or data.get("metadata", {}).get("err") or resp.text)
    except ValueError:
        return resp.text.strip()[:200]


@contextlib.contextmanager
def _without_env_ca_bundle() -> Iterator[None]:
    saved = {
        k: os.environ.pop(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if k in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


class PylxdIncus:
    """The real backend. One instance talks to one Incus project."""

    def __init__(self, cfg: IncusConfig, project: str | None = None) -> None:
        self.cfg = cfg
        self.project = project or cfg.project
        endpoint = cfg.remote if cfg.remote != "local" else _socket_path(cfg)
        cert = None
        if cfg.remote != "local" and cfg.client_cert and cfg.client_key:
            cert = (str(Path(cfg.client_cert).expanduser()), str(Path(cfg.client_key).expanduser()))
        verify = cfg.verify
        if isinstance(verify, str):
            verify = str(Path(verify).expanduser())
        try:
            # The constructor already calls the API: a dead daemon fails here, clearly.
            with _without_env_ca_bundle():
                self.client = pylxd.Client(endpoint=endpoint, cert=cert, verify=verify)
            # requests lets $REQUESTS_CA_BUNDLE/$CURL_CA_BUNDLE replace the session's `verify`
            # (false, or the cluster certificate pylxd pins): the plex file decides, not the env.
            self.client.api.session.trust_env = False
        except (lxd_exc.ClientConnectionFailed, requests.RequestException, OSError) as e:
            raise BackendError(
                f"cannot reach Incus at {endpoint}: {e}",
                hint="is incusd running? (bin/setup-incus starts it)",
            ) from None
        self.where = endpoint

    # -- low level ---------------------------------------------------------------------------

    def _params(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"project": self.project, **(extra or {})}

    def _url(self, path: str) -> str:
        return f"{self.client.api._api_endpoint}/{path.lstrip('/')}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        what: str = "",
        ok_missing: bool = False,
        project: bool = True,
        **kwargs: Any,
    ) -> requests.Response | None:
        url = self._url(path)
        p = self._params(params) if project else (params or {})
        try:
            resp: requests.Response = self.client.api.session.request(
                method, url, params=p, timeout=600, **kwargs
            )
        except requests.RequestException as e:
            raise BackendError(f"Incus {what or path}: {e}") from None
        if resp.status_code == 404 and ok_missing:
            return None
        if resp.status_code >= 400:
            raise BackendError(f"Incus {what or path}: {_error_text(resp)}")
        return resp

    def _sync(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        if resp is None:
            return None
        data = resp.json()
        if data.get("type") == "async":
            return self._wait(data["operation"], kw.get("what", path))
        return data.get("metadata")

    def _wait(self, operation: str, what: str) -> dict[str, Any]:
        op_id = operation.rsplit("/", 1)[-1]
        while True:
            resp = self._request(
                "GET",
                f"operations/{op_id}/wait",
                params={"timeout": "60"},
                what=what,
                project=False,
            )
            assert resp is not None
            data = resp.json()
            if data.get("type") == "error":
                # Incus 6.0 answers a wait that timed out with HTTP 200, type "error" and
                # "context deadline exceeded": the operation is still running, wait again.
                if "deadline exceeded" in str(data.get("error")):
                    continue
                raise BackendError(f"Incus {what}: {data.get('error')}")
            meta: dict[str, Any] = data["metadata"]
            code = meta.get("status_code")
            if code == 200:
                return meta
            if code and code >= 400:
                raise BackendError(f"Incus {what}: {meta.get('err') or meta.get('status')}")

    # -- projects ----------------------------------------------------------------------------

    def ensure_project(self) -> None:
        if self.project == "default":
            return
        resp = self._request("GET", f"projects/{self.project}", ok_missing=True, project=False)
        if resp is not None:
            return
        # Own images, profiles and volumes: a plex's project is self-contained and removable.
        # Networks stay shared with the default project (the bridge is set up once per host).
        config = {
            "features.images": "true",
            "features.profiles": "true",
            "features.storage.volumes": "true",
            "features.storage.buckets": "true",
            "features.networks": "false",
        }
        self._sync(
            "POST",
            "projects",
            project=False,
            what=f"create project {self.project}",
            json={"name": self.project, "config": config, "description": "managed by plex"},
        )

    def delete_project(self) -> None:
        """Remove the project and everything in it (tests use throwaway projects)."""
        for name in self.instance_names():
            self.delete_instance(name)
        for img in self.images():
            self.delete_image(img.fingerprint)
        for pool_name in _names(self._sync("GET", "storage-pools", project=False)):
            vols = self._sync("GET", f"storage-pools/{pool_name}/volumes/custom")
            for v in _names(vols):
                self.delete_volume(pool_name, v)
        for pname in _names(self._sync("GET", "profiles")):
            if pname != "default":
                self._sync("DELETE", f"profiles/{pname}", what=f"delete profile {pname}")
        self._request(
            "DELETE",
            f"projects/{self.project}",
            project=False,
            ok_missing=True,
            what=f"delete project {self.project}",
        )

    # -- instances ---------------------------------------------------------------------------

    def instance_names(self) -> list[str]:
        return _names(self._sync("GET", "instances"))

    def neighbours(self, network: str) -> list[Neighbour]:
        """Every instance with a NIC on `network`, in every project, with its configured and
        live IPv4 addresses (read-only: for the collision check before a deploy creates)."""
        out = []
        insts = (
            self._sync(
                "GET",
                "instances",
                project=False,
                what="list instances",
                params={"all-projects": "true", "recursion": "2"},
            )
            or []
        )
        for inst in insts:
            nics = [
                d
                for d in (inst.get("expanded_devices") or {}).values()
                if d.get("type") == "nic" and d.get("network") == network
            ]
            if not nics:
                continue
            addrs = {d["ipv4.address"] for d in nics if d.get("ipv4.address")}
            for iface in ((inst.get("state") or {}).get("network") or {}).values():
                addrs |= {
                    a["address"]
                    for a in iface.get("addresses") or []
                    if a.get("family") == "inet" and a.get("scope") == "global"
                }
            out.append(
                Neighbour(
                    project=inst.get("project", "default"),
                    name=inst["name"],
                    addresses=tuple(sorted(addrs)),
                    plex=(inst.get("config") or {}).get(owner.PLEX),
                )
            )
        return out

    def _instances_full(self) -> list[dict[str, Any]]:
        return self._sync("GET", "instances", params={"recursion": "1"}) or []

    def observe(self, plex: str) -> Observed:
        """Read-only: the instances and aliases of `plex` in the project. Others are ignored."""
        instances = {}
        for inst in self._instances_full():
            config = inst.get("config") or {}
            if not config and inst.get("location") and inst["name"].startswith(f"{plex}-"):
                # On a member that is down Incus lists only name, location and status Error:
                # a node name of this plex is taken to be its node, known only as unreachable
                # (plex never acts on it, so a wrong guess touches nothing).
                inst = {**inst, "config": {owner.PLEX: plex, owner.NODE: inst["name"]}}
                config = inst["config"]
            if not owned(config, plex) or config.get(owner.BUILD):
                continue
            instances[inst["name"]] = _observed(inst)
        aliases = {
            a["name"]: a["target"]
            for a in self._sync("GET", "images/aliases", params={"recursion": "1"}) or []
        }
        return Observed(
            plex=plex,
            project=self.project,
            instances=instances,
            aliases=aliases,
            members=self.members(),
        )

    def members(self) -> dict[str, str]:
        """Cluster members -> "" when online, else why not ("Offline: <Incus's message>");
        empty on a standalone server."""
        # pylxd read GET /1.0 when connecting.
        info: dict[str, Any] = getattr(self.client, "host_info", None) or {}
        if not (info.get("environment") or {}).get("server_clustered"):
            return {}
        out = {}
        for m in (
            self._sync(
                "GET",
                "cluster/members",
                project=False,
                params={"recursion": "1"},
                what="cluster members",
            )
            or []
        ):
            status = str(m.get("status", ""))
            out[m["server_name"]] = (
                "" if status == "Online" else (f"{status}: {m.get('message', '')}".rstrip(": "))
            )
        return out

    def observe_builds(self, plex: str) -> list[ObservedInstance]:
        """Transient bake instances of `plex` (marked with user.plex.build)."""
        out = []
        for inst in self._instances_full():
            config = inst.get("config") or {}
            if owned(config, plex) and config.get(owner.BUILD):
                out.append(_observed(inst))
        return out

    def instance_config(self, name: str) -> dict[str, str]:
        meta = self._sync("GET", f"instances/{name}", what=f"get {name}")
        return dict(meta.get("config", {})) if meta else {}

    def instance_state(self, name: str) -> dict[str, Any]:
        return self._sync("GET", f"instances/{name}/state", what=f"state of {name}") or {}

    def create_instance(
        self,
        name: str,
        *,
        image: str,
        config: dict[str, str],
        devices: dict[str, dict[str, str]],
        profiles: list[str],
        virt: str = "container",
        target: str | None = None,
        source: dict[str, str] | None = None,
    ) -> None:
        """Create (not start) an instance from a local image (fingerprint or alias), or from
        an explicit `source` such as a remote image server's alias."""
        if source is None:
            source = {"type": "image"}
            if len(image) == 64 and all(c in "0123456789abcdef" for c in image):
                source["fingerprint"] = image
            else:
                source["alias"] = image
        body = {
            "name": name,
            "type": virt,
            "source": source,
            "config": config,
            "devices": devices,
            "profiles": profiles,
        }
        params = {"target": target} if target else None
        self._sync("POST", "instances", json=body, params=params, what=f"create {name}")

    def _state(self, name: str, action: str, force: bool = False) -> None:
        self._sync(
            "PUT",
            f"instances/{name}/state",
            what=f"{action} {name}",
            json={"action": action, "timeout": 30, "force": force},
        )

    def start(self, name: str) -> None:
        self._state(name, "start")

    def stop(self, name: str, force: bool = True) -> None:
        state = self._sync(
            "GET", f"instances/{name}/state", what=f"state of {name}", ok_missing=True
        )
        if state is None or state.get("status") != "Running":
            return
        self._state(name, "stop", force=force)

    # -- snapshots (copy-on-write on btrfs; they go with their instance) -------------------

    def snapshots(self, name: str) -> list[str]:
        urls = self._sync("GET", f"instances/{name}/snapshots", what=f"snapshots of {name}")
        return _names(urls)

    def create_snapshot(self, name: str, snapshot: str) -> None:
        self._sync(
            "POST",
            f"instances/{name}/snapshots",
            what=f"snapshot {name}/{snapshot}",
            json={"name": snapshot, "stateful": False},
        )

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self._sync(
            "DELETE",
            f"instances/{name}/snapshots/{snapshot}",
            what=f"delete snapshot {name}/{snapshot}",
            ok_missing=True,
        )

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Put `name` back to `snapshot` (Incus wants it stopped for a clean restore)."""
        self._sync(
            "PUT",
            f"instances/{name}",
            what=f"restore {name}/{snapshot}",
            json={"restore": snapshot},
        )

    def delete_instance(self, name: str) -> None:
        """Stop (forced) and delete `name`, waiting for both; gone already is fine.

        Retried: an instance another (killed) plex process was starting or stopping can be
        busy for a moment, and a deploy must finish that work without a manual step."""
        last: BackendError | None = None
        for attempt in range(5):
            state = self._sync(
                "GET", f"instances/{name}/state", ok_missing=True, what=f"state of {name}"
            )
            if state is None:
                return
            try:
                if state.get("status") not in ("Stopped", None):
                    self._state(name, "stop", force=True)
                self._sync("DELETE", f"instances/{name}", ok_missing=True, what=f"delete {name}")
            except BackendError as e:
                last = e
                time.sleep(1 + attempt)
                continue
            if self._request("GET", f"instances/{name}", ok_missing=True) is None:
                return
        why = last.message if last else "it is still there"
        raise BackendError(f"Incus: cannot delete {name}: {why}")

    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult:
        body = {
            "command": argv,
            "environment": {
                "HOME": "/root",
                "LANG": "C.UTF-8",
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                **(env or {}),
            },
            "wait-for-websocket": False,
            "record-output": True,
            "interactive": False,
        }
        meta = self._sync(
            "POST", f"instances/{name}/exec", json=body, what=f"exec {argv[0]} in {name}"
        )
        md = meta.get("metadata") or {}
        out: dict[str, str] = {}
        for fd, log_url in (md.get("output") or {}).items():
            path = log_url.split("/1.0/", 1)[-1]
            resp = self._request("GET", path, what=f"exec output of {name}")
            out[fd] = resp.content.decode(errors="replace") if resp is not None else ""
            # Logs pile up in the instance's log dir otherwise.
            self._request("DELETE", path, ok_missing=True)
        return ExecResult(int(md.get("return", -1)), out.get("1", ""), out.get("2", ""))

    def push_file(
        self, name: str, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        headers = {
            "X-Incus-type": "file",
            "X-Incus-mode": f"{mode:04o}",
            "X-Incus-uid": str(uid),
            "X-Incus-gid": str(gid),
            "X-Incus-write": "overwrite",
            "Content-Type": "application/octet-stream",
        }
        self._request(
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
            resp = self._request(
                "GET",
                f"instances/{name}/files",
                params={"path": current},
                ok_missing=True,
                what=f"stat {current} in {name}",
            )
            if resp is not None:
                if resp.headers.get("X-Incus-type") != "directory":
                    raise BackendError(f"{name}: {current} exists and is not a directory")
                continue
            self._request(
                "POST",
                f"instances/{name}/files",
                params={"path": current},
                data=b"",
                headers={
                    "X-Incus-type": "directory",
                    "X-Incus-mode": f"{mode:04o}",
                    "X-Incus-uid": "0",
                    "X-Incus-gid": "0",
                },
                what=f"mkdir {current} in {name}",
            )

    def pull_file(self, name: str, path: str) -> bytes:
        resp = self._request(
            "GET", f"instances/{name}/files", params={"path": path}, what=f"pull {path} from {name}"
        )
        assert resp is not None
        return resp.content

    def file_mode(self, name: str, path: str) -> int:
        """The file's mode as Incus reports it (X-Incus-mode), to check what a push applied."""
        resp = self._request(
            "GET", f"instances/{name}/files", params={"path": path}, what=f"stat {path} in {name}"
        )
        assert resp is not None
        return int(resp.headers.get("X-Incus-mode", "0"), 8)

    def set_config(self, name: str, config: dict[str, str]) -> None:
        """Merge `config` keys into the instance's config (PATCH keeps the other keys)."""
        self._sync("PATCH", f"instances/{name}", json={"config": config}, what=f"update {name}")

    # -- images ------------------------------------------------------------------------------

    def publish(
        self,
        name: str,
        *,
        aliases: list[str],
        properties: dict[str, str],
        compression: str = "zstd",
    ) -> str:
        body = {
            "source": {"type": "instance", "name": name},
            "properties": properties,
            "compression_algorithm": compression,
            "public": False,
        }
        meta = self._sync("POST", "images", json=body, what=f"publish {name}")
        fingerprint: str = meta["metadata"]["fingerprint"]
        for alias in aliases:
            self.set_alias(alias, fingerprint)
        return fingerprint

    def import_image(
        self, metadata: Path, rootfs: Path | None, properties: dict[str, str], vm: bool = False
    ) -> str:
        """Import a split (metadata + rootfs) or unified image tarball; returns its fingerprint.

        `vm`: the rootfs is a VM disk (qcow2); Incus tells the two apart by the part's name.
        """
        headers = {
            "X-Incus-properties": "&".join(
                f"{urllib.parse.quote(k)}={urllib.parse.quote(v)}" for k, v in properties.items()
            ),
            "X-Incus-public": "0",
        }
        with contextlib.ExitStack() as stack:
            meta_f = stack.enter_context(metadata.open("rb"))
            if rootfs is None:
                headers["Content-Type"] = "application/octet-stream"
                meta = self._sync(
                    "POST", "images", data=meta_f, headers=headers, what=f"import {metadata.name}"
                )
            else:
                root_f = stack.enter_context(rootfs.open("rb"))
                # Multipart: the metadata part first, then the rootfs (Incus requires this order).
                # Streamed from the files (requests' own `files=` builds the whole body in
                # memory: a VM disk is gigabytes).
                body = MultipartEncoder(
                    [
                        ("metadata", (metadata.name, meta_f, "application/octet-stream")),
                        (
                            "rootfs.img" if vm else "rootfs",
                            (rootfs.name, root_f, "application/octet-stream"),
                        ),
                    ]
                )
                headers["Content-Type"] = body.content_type
                meta = self._sync(
                    "POST", "images", data=body, headers=headers, what=f"import {metadata.name}"
                )
        fp: str = meta["metadata"]["fingerprint"]
        return fp

    def export_image(self, fingerprint: str, dest: Path) -> list[Path]:
        """Write the image's file(s) as Incus stores them into `dest`: one (unified) or two."""
        resp = self._request(
            "GET", f"images/{fingerprint}/export", stream=True, what=f"export {fingerprint[:12]}"
        )
        assert resp is not None
        ctype = resp.headers.get("Content-Type", "")
        dest.mkdir(parents=True, exist_ok=True)
        if ctype.startswith("multipart/form-data"):
            # Split images (VM images: metadata + a qcow2 rootfs.img) come back as multipart:
            # parsed as a stream, each part written to its file, never held in memory.
            boundary = _boundary(ctype)
            return split_multipart(resp.iter_content(1 << 20), boundary, dest)
        path = dest / f"{fingerprint}.tar"
        with path.open("wb") as f:
            for chunk in resp.iter_content(1 << 20):
                f.write(chunk)
        return [path]

    def images(self) -> list[ImageInfo]:
        out = []
        for img in self._sync("GET", "images", params={"recursion": "1"}) or []:
            out.append(
                ImageInfo(
                    fingerprint=img["fingerprint"],
                    aliases=tuple(a["name"] for a in img.get("aliases") or []),
                    properties=dict(img.get("properties") or {}),
                    size=int(img.get("size", 0)),
                    created_at=img.get("created_at", ""),
                )
            )
        return out

    def image_by_alias(self, alias: str) -> ImageInfo | None:
        meta = self._sync("GET", f"images/aliases/{alias}", ok_missing=True)
        if meta is None:
            return None
        for img in self.images():
            if img.fingerprint == meta["target"]:
                return img
        return None

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        """Point `alias` at `fingerprint`, creating or moving it."""
        existing = self._sync("GET", f"images/aliases/{alias}", ok_missing=True)
        if existing is None:
            self._sync(
                "POST",
                "images/aliases",
                what=f"alias {alias}",
                json={"name": alias, "target": fingerprint, "description": description},
            )
        elif existing["target"] != fingerprint:
            self._sync(
                "PUT",
                f"images/aliases/{alias}",
                what=f"alias {alias}",
                json={"target": fingerprint, "description": description},
            )

    def delete_alias(self, alias: str) -> None:
        self._request("DELETE", f"images/aliases/{alias}", ok_missing=True)

    def delete_image(self, fingerprint: str) -> None:
        resp = self._request(
            "DELETE",
            f"images/{fingerprint}",
            ok_missing=True,
            what=f"delete image {fingerprint[:12]}",
        )
        if resp is not None and resp.json().get("type") == "async":
            self._wait(resp.json()["operation"], f"delete image {fingerprint[:12]}")

    # -- storage volumes ---------------------------------------------------------------------

    def volume_exists(self, pool: str, name: str) -> bool:
        return (
            self._request("GET", f"storage-pools/{pool}/volumes/custom/{name}", ok_missing=True)
            is not None
        )

    def ensure_volume(
        self, pool: str, name: str, config: dict[str, str], target: str | None = None
    ) -> bool:
        """Create a custom volume if missing; returns True when it was created.

        `target`: the cluster member holding it. On a cluster a local pool (dir, btrfs) has
        one volume per member: the registry's cache must live where the registry node runs."""
        params = {"target": target} if target else None
        if (
            self._request(
                "GET", f"storage-pools/{pool}/volumes/custom/{name}", params=params, ok_missing=True
            )
            is not None
        ):
            return False
        self._sync(
            "POST",
            f"storage-pools/{pool}/volumes/custom",
            what=f"create volume {name}",
            params=params,
            json={"name": name, "type": "custom", "content_type": "filesystem", "config": config},
        )
        return True

    def delete_volume(self, pool: str, name: str) -> None:
        self._request(
            "DELETE",
            f"storage-pools/{pool}/volumes/custom/{name}",
            ok_missing=True,
            what=f"delete volume {name}",
        )


def connect(cfg: IncusConfig, project: str | None = None, create: bool = True) -> PylxdIncus:
    """Connect to the plex's Incus and make sure its project exists."""
    inc = PylxdIncus(cfg, project)
    if create:
        inc.ensure_project()
    return inc


@contextlib.contextmanager
def throwaway_project(cfg: IncusConfig, name: str) -> Iterator[PylxdIncus]:
    """A project created for the duration of the block and removed with everything in it."""
    inc = connect(cfg, name)
    try:
        yield inc
    finally:
        inc.delete_project()


def _boundary(ctype: str) -> bytes:
    for param in ctype.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode()
    raise BackendError(f"Incus image export: multipart without a boundary ({ctype})")


def _part_name(headers: bytes) -> str:
    """The part's file name: `filename=` (as Incus names the files), else `name=`."""
    params: dict[str, str] = {}
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        if line.lower().startswith("content-disposition:"):
            for param in line.split(";")[1:]:
                key, _, value = param.strip().partition("=")
                params[key.lower()] = value.strip('"')
    name = Path(params.get("filename") or params.get("name") or "").name
    if not name or name in (".", ".."):
        raise BackendError("Incus image export: a multipart part has no file name")
    return name


def split_multipart(chunks: Iterator[bytes], boundary: bytes, dest: Path) -> list[Path]:
    """Write each part of a multipart/form-data stream to `dest/<its filename>`, holding at most
    one chunk plus a boundary's length in memory (filename parts named, as Incus sends them)."""
    delim = b"\r\n--" + boundary
    buf = b"\r\n"  # the first boundary has no CRLF before it
    out: list[Path] = []
    f: Any = None
    state = "preamble"
    stream = iter(chunks)
    done = False
    try:
        while not done:
            if state == "preamble":
                i = buf.find(delim)
                if i < 0:
                    buf = buf[-len(delim) :] + _next(stream, "before the first part")
                    continue
                buf, state = buf[i + len(delim) :], "after-delim"
            elif state == "after-delim":
                if len(buf) < 2:
                    buf += _next(stream, "after a boundary")
                    continue
                if buf.startswith(b"--"):
                    done = True
                    continue
                buf, state = buf[2:], "headers"  # CRLF
            elif state == "headers":
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(buf) > 1 << 16:
                        raise BackendError("Incus image export: multipart headers too long")
                    buf += _next(stream, "in part headers")
                    continue
                path = dest / _part_name(buf[:i])
                f = path.open("wb")
                out.append(path)
                buf, state = buf[i + 4 :], "body"
            else:  # body
                i = buf.find(delim)
                if i >= 0:
                    f.write(buf[:i])
                    f.close()
                    f = None
                    buf, state = buf[i + len(delim) :], "after-delim"
                    continue
                keep = len(delim) - 1
                if len(buf) > keep:
                    f.write(buf[:-keep])
                    buf = buf[-keep:]
                buf += _next(stream, "in a part")
    finally:
        if f is not None:
            f.close()
    return out


def _next(stream: Iterator[bytes], where: str) -> bytes:
    for chunk in stream:
        if chunk:
            return chunk
    raise BackendError(f"Incus image export: the multipart stream ended {where}")
