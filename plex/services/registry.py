"""plex registry up / warm / stats: plain functions over the Incus or Docker backend.

- `up_incus`: deploy ONLY the registry node (a plan over the registry alone: it is the first
  wave and depends on nothing), its cache on the custom volume `<plex>-registry-cache` that
  reset and destroy keep; then push the upstream logins, if the plex names a credentials file.
- `up_docker`: `registry.runtime: docker`: the same cache as containers on a Docker engine (one
  zot, or one distribution per upstream) over a named volume of the same name.
- `warm`: pull an image list through the cache from where the engine runs (curl inside the
  registry node; for Docker, HTTP to the address the nodes use), so no containerd is needed.
  Blobs are read and thrown away: only the cache keeps them.
- `stats`: repositories and tags, the cache's size, and hits/misses where the engine tells.

Upstream passwords go from the credentials file straight into files on the registry (pushed
0600/0640 or copied into a container); nothing here prints or logs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plex.backends.docker import LABEL_PLEX, LABEL_SPEC, ContainerFile, ContainerSpec, Docker
from plex.backends.incus import Incus
from plex.deploy.plan import Plan
from plex.deploy.probes import load_probes, run_probe, upstream_probes
from plex.deploy.spec import registry_cache_path, registry_volume
from plex.errors import BackendError, ProbeError, UsageError
from plex.model import topology
from plex.model.plex import Engine, Plex, Role
from plex.registry import distribution, zot, zot_metrics
from plex.registry.credentials import Credentials, load_plex_credentials
from plex.registry.engines import engine_files
from plex.registry.mirrors import mirror_url
from plex.services.apply import ApplyResult, Report
from plex.services.deploy import apply_plan, plan_observed
from plex.services.registry_secrets import push_credentials
from plex.store import releases
from plex.store.identity import require_identity
from plex.store.lock import plex_lock

DISTRIBUTION_IMAGE = "registry:2"  # CNCF Distribution's official image; binary /bin/registry
ZOT_BINARY = "/usr/bin/zot"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
PLATFORM = ("linux", "amd64")
DEFAULT_REGISTRY = "docker.io"
# Distribution 2.8 logs one of these for every blob (and manifest) it stores from upstream.
_STORED_RE = re.compile(r"scheduler entry for (\S+)@(sha256:[0-9a-f]{64})")
# Its access log (combined format): a blob served to a client.
# containerd adds `?ns=<upstream>` to every request it sends to a mirror.
_BLOB_GET_RE = re.compile(
    r'"GET /v2/(\S+)/blobs/(sha256:[0-9a-f]{64})(?:\?\S*)? HTTP/[0-9.]+" 200 '
)
# distribution-spec repository names: path components joined by single slashes.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LOG_FILTER = r"scheduler entry for |\"GET /v2/[^ ]+/blobs/"


def registry_node(plex: Plex) -> topology.Node:
    node = topology.registry_node(plex)
    if node is None:
        raise UsageError(
            f"plex '{plex.name}' has no registry node", hint="add roles.registry to the plex file"
        )
    return node


# ============================================================================================
# up


@dataclass(frozen=True)
class UpResult:
    plex: str
    runtime: str
    engine: str
    volume: str
    volume_created: bool
    actions: tuple[str, ...]  # what happened, one line each ("demo-registry1: create (missing)")
    endpoints: tuple[str, ...]  # where the cache listens (the nodes' mirror endpoints)
    secrets_pushed: tuple[str, ...] = ()  # paths only, never content
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 2)}


def endpoints(plex: Plex) -> tuple[str, ...]:
    return tuple(mirror_url(plex, u.name) for u in plex.registry.upstreams)


def registry_only(plex: Plex) -> Plex:
    """The plex with its registry role only: what `registry up` plans over.

    Planning the registry alone is the registry's share of the whole plan: it is the first wave,
    depends on no other node and is never cascaded, and its instance spec reads nothing but the
    registry's own settings. Other roles need not be baked for it."""
    roles = plex.roles.model_copy(update={r.value: None for r in Role if r is not Role.REGISTRY})
    return plex.model_copy(update={"roles": roles})


def registry_plan(plex: Plex, incus: Incus, replace: bool = False) -> Plan:
    node = registry_node(plex)
    alone = registry_only(plex)
    observed = incus.observe(plex.name)
    # Only the registry's instance: every other node of the plex would look like an orphan.
    mine = dataclasses.replace(
        observed, instances={k: v for k, v in observed.instances.items() if k == node.name}
    )
    return plan_observed(alone, mine, replace=[node.name] if replace else [])


def up_incus(
    plex: Plex,
    incus: Incus,
    root: Path,
    replace: bool = False,
    parallel: int = 8,
    report: Report | None = None,
) -> tuple[UpResult, Plan, ApplyResult | None]:
    """Create (or keep, or with `replace` recreate) the registry node, then push logins."""
    start = time.monotonic()
    node = registry_node(plex)
    volume = registry_volume(plex)
    with plex_lock(plex.name, "deploy"):
        plan = registry_plan(plex, incus, replace)
        created = not incus.volume_exists(plex.incus.pool, volume)
        result = None if plan.empty else apply_plan(plex, incus, plan, root, parallel, report)
        pushed = push_credentials(plex, incus, node.name)
    actions = tuple(
        f"{a.node}: {a.verb.value}" + (f" ({a.reason})" if a.reason else "") for a in plan.actions
    )
    up = UpResult(
        plex.name,
        "incus",
        plex.registry.engine.value,
        volume,
        created,
        actions,
        endpoints(plex),
        tuple(pushed),
        time.monotonic() - start,
    )
    return up, plan, result


def container_name(plex: Plex, upstream_name: str | None = None) -> str:
    """`<plex>-registry` (zot), `<plex>-registry-<upstream>` (distribution, `:` -> `-`)."""
    base = f"{plex.name}-registry"
    if upstream_name is None:
        return base
    return f"{base}-{re.sub(r'[^A-Za-z0-9_.-]', '-', upstream_name)}"


def docker_specs(
    plex: Plex, credentials: Credentials | None = None, images: Mapping[Engine, str] | None = None
) -> list[ContainerSpec]:
    """The registry's containers for `runtime: docker` (pure). `images` overrides an engine's
    image (tests use a locally built one; the real ones come from ghcr.io / Docker Hub)."""
    volume = registry_volume(plex)
    labels = {LABEL_PLEX: plex.name}
    if plex.registry.engine is Engine.ZOT:
        files = tuple(
            ContainerFile(f.path, f.content.encode(), f.mode, f.secret)
            for f in engine_files(plex, credentials)
        )
        image = (images or {}).get(Engine.ZOT, zot.image(plex))
        return [
            ContainerSpec(
                container_name(plex),
                image,
                (ZOT_BINARY,),
                ("serve", zot.CONFIG_PATH),
                {volume: zot.ROOT_DIRECTORY},
                files,
                labels,
            )
        ]
    image = (images or {}).get(Engine.DISTRIBUTION, DISTRIBUTION_IMAGE)
    specs = []
    for p in distribution.distribution_proxies(plex, credentials):
        # The registry image runs as root: a login-bearing config is 0600 root.
        cfg = ContainerFile(
            p.config_path,
            distribution.render_yaml(p.config).encode(),
            0o600 if p.has_secrets else 0o644,
            p.has_secrets,
        )
        specs.append(
            ContainerSpec(
                container_name(plex, p.upstream.name),
                image,
                ("/bin/registry",),
                ("serve", p.config_path),
                {volume: distribution.ROOT_DIRECTORY},
                (cfg,),
                {**labels, "plex.upstream": p.upstream.name},
            )
        )
    return specs


def up_docker(plex: Plex, docker: Docker, images: Mapping[Engine, str] | None = None) -> UpResult:
    """Named volume, then the engine's containers: kept when unchanged and running, else
    recreated; containers of the plex that are no longer wanted are removed."""
    start = time.monotonic()
    volume = registry_volume(plex)
    created = docker.ensure_volume(volume, {LABEL_PLEX: plex.name})
    specs = docker_specs(plex, load_plex_credentials(plex), images)
    for image in sorted({s.image for s in specs}):
        if not docker.has_image(image):
            docker.pull_image(image)
    existing = {c.name: c for c in docker.containers(plex.name)}
    actions = []
    for spec in specs:
        have = existing.pop(spec.name, None)
        if have is not None and have.running and have.labels.get(LABEL_SPEC) == spec.digest():
            actions.append(f"{spec.name}: keep")
            continue
        if have is not None:
            docker.remove(spec.name)
        docker.run(spec)
        actions.append(f"{spec.name}: {'replace' if have else 'create'}")
    for name in sorted(existing):
        docker.remove(name)
        actions.append(f"{name}: delete (not in the plex file)")
    pushed = tuple(f.path for s in specs for f in s.files if f.secret)
    return UpResult(
        plex.name,
        "docker",
        plex.registry.engine.value,
        volume,
        created,
        tuple(actions),
        endpoints(plex),
        pushed,
        time.monotonic() - start,
    )


def down_docker(plex: Plex, docker: Docker, everything: bool = False) -> list[str]:
    """Remove the plex's registry containers; the cache volume too only with `everything`."""
    removed = []
    for c in docker.containers(plex.name):
        docker.remove(c.name)
        removed.append(c.name)
    volume = registry_volume(plex)
    if everything and docker.volume_exists(volume):
        docker.delete_volume(volume)
        removed.append(f"volume {volume}")
    return removed


# ============================================================================================
# Talking to the cache where it runs


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
        self.node = node or registry_node(plex).name

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


REPOSITORIES = "docker/registry/v2/repositories"


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


# ============================================================================================
# warm


@dataclass(frozen=True)
class Reference:
    """An image reference split the way registries see it."""

    registry: str  # docker.io, ghcr.io, lab.internal:5000
    repository: str  # library/nginx
    reference: str  # a tag or a sha256 digest

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_reference(text: str) -> Reference:
    """docker-style reference: `nginx` -> docker.io/library/nginx:latest."""
    ref = text.strip()
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    tag = ""
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        registry = "docker.io"
        if "/" not in path:
            path = f"library/{path}"
    if not _REPOSITORY_RE.fullmatch(path):
        raise UsageError(f"'{text}' is not an image reference")
    return Reference(registry, path, digest or tag or "latest")


def read_image_list(text: str) -> list[str]:
    """One image per line; blank lines and `#` comments are skipped."""
    return [s for line in text.splitlines() if (s := line.split("#", 1)[0].strip())]


def default_image_list(plex: Plex) -> list[str]:
    """The RKE2 release's `rke2-images.linux-amd64.txt`, checksum-verified like the tarball."""
    rel = releases.rke2_release(plex.kubernetes)
    path = rel.asset(releases.RKE2_IMAGE_LIST).fetch().path
    return read_image_list(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Warmed:
    image: str
    ok: bool
    digest: str | None = None  # the platform manifest's digest
    blobs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 2)}


def cache_path(plex: Plex, ref: Reference) -> tuple[int, str]:
    """(port, `/v2/<name>`) where the cache serves `ref`'s repository; UsageError when its
    registry is not an upstream of the plex."""
    names = [u.name for u in plex.registry.upstreams]
    if ref.registry not in names:
        raise UsageError(
            f"{ref.registry} is not an upstream of plex '{plex.name}'",
            hint="upstreams: " + ", ".join(names),
        )
    if plex.registry.engine is Engine.ZOT:
        return plex.registry.port, f"/v2/{zot.destination(plex, ref.registry)}/{ref.repository}"
    return distribution.port_of(plex, ref.registry), f"/v2/{ref.repository}"


def _platform_manifest(index: Mapping[str, Any]) -> str | None:
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        if (p.get("os"), p.get("architecture")) == PLATFORM:
            return str(m["digest"])
    return None


def warm_one(plex: Plex, cache: Cache, image: str) -> Warmed:
    start = time.monotonic()

    def failed(why: str) -> Warmed:
        return Warmed(image, False, seconds=time.monotonic() - start, error=why)

    try:
        ref = parse_reference(image)
        port, base = cache_path(plex, ref)
    except UsageError as e:
        return failed(e.message)
    accept = ", ".join(MANIFEST_TYPES)
    reply = cache.get(port, f"{base}/manifests/{ref.reference}", accept)
    if reply.status != 200:
        return failed(f"manifest {ref.reference}: HTTP {reply.status or 'no answer'}")
    try:
        doc = json.loads(reply.body)
        if doc.get("mediaType", reply.content_type.split(";")[0]) in INDEX_TYPES:
            digest = _platform_manifest(doc)
            if digest is None:
                return failed("no linux/amd64 manifest in the index")
            reply = cache.get(port, f"{base}/manifests/{digest}", accept)
            if reply.status != 200:
                return failed(f"manifest {digest}: HTTP {reply.status or 'no answer'}")
            doc = json.loads(reply.body)
        blobs = [doc["config"]["digest"], *(layer["digest"] for layer in doc.get("layers", []))]
    except (ValueError, KeyError, TypeError) as e:
        return failed(f"unreadable manifest: {e}")
    digest = "sha256:" + hashlib.sha256(reply.body.encode()).hexdigest()
    total = 0
    for b in blobs:
        got = cache.drain(port, f"{base}/blobs/{b}")
        if got.status != 200:
            return failed(f"blob {b[:19]}: HTTP {got.status or 'no answer'}")
        total += got.size
    return Warmed(image, True, digest, len(blobs), total, time.monotonic() - start)


def warm(
    plex: Plex, cache: Cache, images: Iterable[str], report: Callable[[Warmed], None] | None = None
) -> list[Warmed]:
    """Pull every image through the cache (one at a time: the upstream is the bottleneck)."""
    out = []
    for image in images:
        w = warm_one(plex, cache, image)
        if report is not None:
            report(w)
        out.append(w)
    return out


# ============================================================================================
# stats


@dataclass(frozen=True)
class Repository:
    upstream: str
    name: str  # as the upstream names it: library/nginx
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Stats:
    plex: str
    engine: str
    runtime: str
    repositories: tuple[Repository, ...]
    size_bytes: int | None
    hits: int | None  # blobs served from the cache
    misses: int | None  # blobs fetched from an upstream
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "repositories": [
                {"upstream": r.upstream, "name": r.name, "tags": list(r.tags)}
                for r in self.repositories
            ],
        }


def distribution_hits(log: str) -> tuple[int, int]:
    """(hits, misses) of blob requests in a Distribution 2.8 proxy's log.

    It exposes no counters worth reading (its expvar proxy metrics count every blob as a hit),
    but it logs "Adding new scheduler entry for <repo>@<digest>" for each blob it stores from
    upstream: a miss. Every other successful blob GET in the access log was a hit."""
    gets = _BLOB_GET_RE.findall(log)
    requested = {d for _, d in gets}
    misses = sum(1 for _, d in _STORED_RE.findall(log) if d in requested)
    return max(len(gets) - misses, 0), misses


def parse_tag_paths(output: str) -> dict[str, list[str]]:
    """`find` output of `.../repositories/<repo>/_manifests/tags/<tag>/current` -> tags."""
    out: dict[str, list[str]] = {}
    for line in output.splitlines():
        m = re.search(r"/repositories/(.+)/_manifests/tags/([^/]+)/current$", line.strip())
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return {k: sorted(v) for k, v in sorted(out.items())}


CATALOG_PAGE = 1000  # Distribution's default catalog.maxentries: a larger n is HTTP 400


def _catalog(cache: Cache, port: int, page_size: int = CATALOG_PAGE) -> list[str]:
    """Every repository, page by page (`last` is where the previous page ended)."""
    out: list[str] = []
    while True:
        path = f"/v2/_catalog?n={page_size}" + (f"&last={out[-1]}" if out else "")
        reply = cache.get(port, path)
        if reply.status != 200:
            raise BackendError(f"registry /v2/_catalog on port {port}: HTTP {reply.status}")
        try:
            page = [str(r) for r in json.loads(reply.body).get("repositories") or []]
        except (ValueError, AttributeError):
            raise BackendError(f"registry /v2/_catalog on port {port}: not JSON") from None
        out += page
        if len(page) < page_size:
            return out


def stats(plex: Plex, cache: Cache, runtime: str) -> Stats:
    if plex.registry.engine is Engine.ZOT:
        return _zot_stats(plex, cache, runtime)
    repos: list[Repository] = []
    hits = misses = 0
    for u in plex.registry.upstreams:
        port = distribution.port_of(plex, u.name)
        # Tags from the cache's storage: a proxy answers tags/list from the upstream.
        tags = parse_tag_paths(cache.tag_paths(u.name))
        for name in _catalog(cache, port):
            repos.append(Repository(u.name, name, tuple(tags.get(name, ()))))
        h, m = distribution_hits(cache.access_log(u.name))
        hits, misses = hits + h, misses + m
    return Stats(
        plex.name,
        plex.registry.engine.value,
        runtime,
        tuple(repos),
        cache.data_size(),
        hits,
        misses,
        "hits and misses count blob requests since the registry "
        "node (or container) started logging",
    )


def _zot_stats(plex: Plex, cache: Cache, runtime: str) -> Stats:
    port = plex.registry.port
    prefixes = {zot.destination(plex, u.name): u.name for u in plex.registry.upstreams}
    repos = []
    for name in _catalog(cache, port):
        prefix, _, rest = name.partition("/")
        reply = cache.get(port, f"/v2/{name}/tags/list")
        tags: list[str] = []
        if reply.status == 200:
            try:
                tags = sorted(json.loads(reply.body).get("tags") or [])
            except ValueError:
                tags = []
        repos.append(Repository(prefixes.get(prefix, prefix), rest or name, tuple(tags)))
    size = cache.data_size()
    metrics = cache.get(port, zot.METRICS_PATH)
    counts = zot_metrics.hits_and_misses(metrics.body) if metrics.status == 200 else None
    if counts is None:
        note = (
            f"zot answered {zot.METRICS_PATH} with HTTP {metrics.status} and no "
            f"{zot_metrics.DOWNLOADS}: hits and misses unknown"
        )
        return Stats(
            plex.name, plex.registry.engine.value, runtime, tuple(repos), size, None, None, note
        )
    note = (
        "hits and misses count manifest requests since zot started "
        f"({zot_metrics.DOWNLOADS} minus {zot_metrics.UPLOADS}, and {zot_metrics.UPLOADS}; "
        f"{counts.downloads} manifests served)"
    )
    return Stats(
        plex.name,
        plex.registry.engine.value,
        runtime,
        tuple(repos),
        size,
        counts.hits,
        counts.misses,
        note,
    )


def upstream_failures(plex: Plex, incus: Incus, root: Path) -> list[ProbeError]:
    """The registry node's `upstream` probes (deploy/probes.yaml), each tried once: one error
    per upstream it cannot resolve, reach or verify."""
    node = registry_node(plex).name
    probes = load_probes(root / "deploy" / "probes.yaml")
    failed: list[ProbeError] = []
    for probe in upstream_probes(plex, require_identity(plex), probes):
        try:
            run_probe(incus, node, node, dataclasses.replace(probe, timeout=0))
        except ProbeError as e:
            failed.append(e)
    return failed


def failed_images(results: Sequence[Warmed]) -> list[Warmed]:
    return [w for w in results if not w.ok]
