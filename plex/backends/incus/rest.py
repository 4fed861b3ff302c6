"""The session to Incus's REST API: requests, their errors, and waiting for operations.

The session is pylxd's (`get_session_for_url`, its public way to build one: the unix-socket
adapter, and a CA path pinned by fingerprint as Incus clusters expect); the URLs are ours.
Every call goes through `request` so that an HTTP error, a timeout or a failed operation becomes
a BackendError naming what plex was doing.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import requests
from pylxd.client import DEFAULT_SCHEME, get_session_for_url
from urllib3._collections import RecentlyUsedContainer

from plex.errors import BackendError
from plex.model.plex import IncusConfig

DEFAULT_SOCKETS = ("/var/lib/incus/unix.socket", "/run/incus/unix.socket")
API_VERSION = "1.0"


# pylxd's unix-socket adapter keeps one connection pool per URL (each exec, each operation wait
# is a new URL) in an LRU of 25, and closes the evicted pool even while a request on it is in
# flight: with more than 25 URLs at once (every node's probes of a cold start, a 64-agent wave)
# urllib3 then fails inside ("'NoneType' object has no attribute 'qsize'"). Room for that many;
# bounded, since every pool keeps its idle connection (one file descriptor) open.
UNIX_POOLS = 256


# A cluster member that just came back is forwarded requests only once the other members'
# event listeners reach it again; until then Incus refuses them before sending anything
# (internal/server/cluster/events.go EventListenerWait: "Server isn't ready yet"; after its 10 s
# wait, connect.go: "Missing event connection with target cluster member"). It takes seconds:
# wait it out, bounded, rather than fail a deploy on a member that is back.
MEMBER_NOT_READY = (
    "Server isn't ready yet",
    "Missing event connection with target cluster member",
)
MEMBER_READY_WAIT = 60.0  # seconds
MEMBER_READY_POLL = 0.5


def widen_unix_pools(session: requests.Session, size: int = UNIX_POOLS) -> None:
    adapter = session.adapters.get(DEFAULT_SCHEME)
    if adapter is not None and hasattr(adapter, "pools"):
        adapter.pools = RecentlyUsedContainer(size, dispose_func=lambda pool: pool.close())


def socket_path(cfg: IncusConfig) -> str:
    if cfg.socket:
        return cfg.socket
    if env := os.environ.get("INCUS_SOCKET"):
        return env
    for cand in DEFAULT_SOCKETS:
        if Path(cand).exists():
            return cand
    return DEFAULT_SOCKETS[0]


def names(urls: list[str] | None) -> list[str]:
    """Names from API URLs like /1.0/profiles/web?project=p."""
    return [u.split("?", 1)[0].rsplit("/", 1)[-1] for u in urls or []]


def _error_text(resp: requests.Response) -> str:
    try:
        data = resp.json()
        return str(data.get("error") or data.get("metadata", {}).get("err") or resp.text)
    except ValueError:
        return resp.text.strip()[:200]


class IncusRest:
    """One session to one Incus server, scoped to one project. The object parts build on it."""

    def __init__(self, cfg: IncusConfig, project: str | None = None) -> None:
        self.cfg = cfg
        self.project = project or cfg.project
        cert: tuple[str, str] | None = None
        verify: bool | str = True
        if cfg.remote == "local":
            self.where = socket_path(cfg)
            endpoint = DEFAULT_SCHEME + urllib.parse.quote(self.where, safe="")
        else:
            self.where = endpoint = cfg.remote.rstrip("/")
            if cfg.client_cert and cfg.client_key:
                cert = (
                    str(Path(cfg.client_cert).expanduser()),
                    str(Path(cfg.client_key).expanduser()),
                )
            verify = cfg.verify
            if isinstance(verify, str):
                verify = str(Path(verify).expanduser())
        self.base = f"{endpoint}/{API_VERSION}"
        self.session: requests.Session = get_session_for_url(endpoint, verify=verify, cert=cert)
        widen_unix_pools(self.session)
        # requests lets $REQUESTS_CA_BUNDLE/$CURL_CA_BUNDLE replace the session's `verify`
        # (false, or the cluster certificate pinned above): the plex file decides, not the env.
        self.session.trust_env = False
        try:
            # GET /1.0 first: a dead daemon or a refused certificate fails here, clearly.
            resp = self.session.get(self.base, timeout=60)
            resp.raise_for_status()
            self.host_info: dict[str, Any] = resp.json().get("metadata") or {}
        except (requests.RequestException, OSError, ValueError) as e:
            raise BackendError(
                f"cannot reach Incus at {self.where}: {e}",
                hint="is incusd running? (bin/setup-incus starts it)",
            ) from None

    def request(
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
        """The raw response (None for a 404 when `ok_missing`); HTTP errors raise."""
        url = f"{self.base}/{path.lstrip('/')}"
        p = {"project": self.project, **(params or {})} if project else (params or {})
        deadline = time.monotonic() + MEMBER_READY_WAIT
        while True:
            try:
                resp = self.session.request(method, url, params=p, timeout=600, **kwargs)
            except requests.RequestException as e:
                raise BackendError(f"Incus {what or path}: {e}") from None
            if resp.status_code == 404 and ok_missing:
                return None
            if resp.status_code < 400:
                return resp
            text = _error_text(resp)
            if not any(m in text for m in MEMBER_NOT_READY) or time.monotonic() >= deadline:
                raise BackendError(f"Incus {what or path}: {text}")
            time.sleep(MEMBER_READY_POLL)

    def sync(self, method: str, path: str, **kw: Any) -> Any:
        """The call's metadata; an async call is waited for and its operation's returned."""
        resp = self.request(method, path, **kw)
        if resp is None:
            return None
        data = resp.json()
        if data.get("type") == "async":
            return self.wait(data["operation"], kw.get("what", path))
        return data.get("metadata")

    def wait(self, operation: str, what: str) -> dict[str, Any]:
        """Wait for the operation to succeed; its failure raises, naming `what`."""
        op_id = operation.rsplit("/", 1)[-1]
        while True:
            resp = self.request(
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
