"""plex.services.registry without a daemon: references, warm over a fake registry, log and metrics
parsing, and stats over fake caches (`up` is in test_registry_up.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plex.errors import UsageError
from plex.model.plex import Engine, Plex, Upstream
from plex.plexfile.load import load_plex
from plex.registry import zot_metrics
from plex.services import registry as ops
from plex.services.registry import cache as cache_mod
from plex.services.registry import catalog as catalog

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "registry"

# Real lines from docker-registry 2.8.2 (bookworm) serving as a proxy: a manifest and a blob
# fetched from upstream (misses), then the same blob served again (a hit). Digests shortened
# to keep the lines readable would not match: they are real.
D1 = "sha256:89cc0070432b4216ab2f9ae9412807082f0a566a3c68a9c5591e1c724e30b3dc"
D2 = "sha256:78205730fdc6203d012842092bf1dd27674cf3e7ad6fcce2c1cdceb9a1325e47"
MANIFEST = "sha256:4cb845d02107e2d1facc26aa470c6d6c9f300beba250796a35d991c7486153c0"
LOG = f"""\
time="2026-11-22T00:56:58.95Z" level=info msg="Adding new scheduler entry for library/plextest@{MANIFEST} with ttl=167h59m59.99s" go.version=go1.19.8
127.0.0.1 - - [22/Nov/2026:00:56:58 +0000] "GET /v2/library/plextest/manifests/1.0 HTTP/1.1" 200 418 "" "containerd/1.6.20"
127.0.0.1 - - [22/Nov/2026:00:56:58 +0000] "GET /v2/library/plextest/blobs/{D1} HTTP/1.1" 200 197 "" "containerd/1.6.20"
time="2026-11-22T00:56:59.00Z" level=info msg="Adding new scheduler entry for library/plextest@{D1} with ttl=167h59m59.99s" go.version=go1.19.8
127.0.0.1 - - [22/Nov/2026:00:56:58 +0000] "GET /v2/library/plextest/blobs/{D2} HTTP/1.1" 200 342 "" "containerd/1.6.20"
time="2026-11-22T00:56:59.02Z" level=info msg="Adding new scheduler entry for library/plextest@{D2} with ttl=167h59m59.99s" go.version=go1.19.8
127.0.0.1 - - [22/Nov/2026:00:57:00 +0000] "GET /v2/library/plextest/blobs/{D1} HTTP/1.1" 200 197 "" "containerd/1.6.20"
127.0.0.1 - - [22/Nov/2026:00:57:00 +0000] "HEAD /v2/library/plextest/blobs/{D2} HTTP/1.1" 200 0 "" "containerd/1.6.20"
127.0.0.1 - - [22/Nov/2026:00:57:00 +0000] "GET /v2/library/plextest/blobs/{D2} HTTP/1.1" 404 157 "" "containerd/1.6.20"
"""  # noqa: E501


def demo() -> Plex:
    return load_plex(REPO / "plexes" / "demo.yaml")


def with_registry(plex: Plex, **changes: Any) -> Plex:
    return plex.model_copy(update={"registry": plex.registry.model_copy(update=changes)})


# --------------------------------------------------------------------------------------------
# references and lists


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("rancher/rke2-runtime:v1.31.4-rke2r1", "docker.io/rancher/rke2-runtime:v1.31.4-rke2r1"),
        ("docker.io/rancher/hardened-etcd:v3.5", "docker.io/rancher/hardened-etcd:v3.5"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        (
            "ghcr.io/project-zot/zot-linux-amd64:v2.1.2",
            "ghcr.io/project-zot/zot-linux-amd64:v2.1.2",
        ),
        ("lab.internal:5000/team/app:2", "lab.internal:5000/team/app:2"),
        ("localhost/app", "localhost/app:latest"),
        (f"quay.io/a/b@{D1}", f"quay.io/a/b@{D1}"),
    ],
)
def test_parse_reference(text: str, want: str) -> None:
    assert str(ops.parse_reference(text)) == want


@pytest.mark.parametrize("bad", ["", "UPPER/case", "docker.io/", "a//b"])
def test_parse_reference_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        ops.parse_reference(bad)


def test_read_image_list_skips_blanks_and_comments() -> None:
    text = "# rke2 images\ndocker.io/rancher/a:1\n\n  docker.io/rancher/b:2  # pinned\n"
    assert ops.read_image_list(text) == ["docker.io/rancher/a:1", "docker.io/rancher/b:2"]


def test_cache_path_per_engine() -> None:
    ref = ops.parse_reference("docker.io/library/nginx:1")
    plex = demo()
    assert ops.cache_path(plex, ref) == (5000, "/v2/library/nginx")
    two = with_registry(
        plex,
        upstreams=(
            Upstream(name="quay.io", url="https://quay.io"),
            Upstream(name="docker.io", url="https://registry-1.docker.io"),
        ),
    )
    assert ops.cache_path(two, ref) == (5001, "/v2/library/nginx")  # one port per upstream
    z = with_registry(two, engine=Engine.ZOT)
    assert ops.cache_path(z, ref) == (5000, "/v2/docker.io/library/nginx")
    with pytest.raises(UsageError, match="not an upstream"):
        ops.cache_path(plex, ops.parse_reference("ghcr.io/x/y:1"))


# --------------------------------------------------------------------------------------------
# warm over a fake registry


@dataclass
class FakeCache:
    """A registry answering from a dict of path -> (content type, body); records requests."""

    objects: dict[str, tuple[str, bytes]]
    requests: list[tuple[str, int, str]] = field(default_factory=list)

    def get(self, port: int, path: str, accept: str = "") -> ops.Reply:
        self.requests.append(("get", port, path))
        if path not in self.objects:
            return ops.Reply(404)
        ctype, body = self.objects[path]
        return ops.Reply(200, ctype, body.decode(), len(body))

    def drain(self, port: int, path: str) -> ops.Reply:
        self.requests.append(("drain", port, path))
        if path not in self.objects:
            return ops.Reply(404)
        return ops.Reply(200, size=len(self.objects[path][1]))

    def data_size(self) -> int | None:
        return 1234

    def tag_paths(self, upstream: str) -> str:
        return ""

    def access_log(self, upstream: str) -> str:
        return ""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_image(base: str) -> FakeCache:
    """An index with arm64 and amd64 manifests; only amd64's blobs exist."""
    config, layer = b'{"os":"linux"}', b"layer-bytes" * 100
    amd = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": _digest(config)},
            "layers": [{"digest": _digest(layer)}],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "digest": "sha256:" + "a" * 64,
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
                {"digest": _digest(amd), "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }
    ).encode()
    oci = "application/vnd.oci.image.manifest.v1+json"
    return FakeCache(
        {
            f"{base}/manifests/1.0": ("application/vnd.oci.image.index.v1+json", index),
            f"{base}/manifests/{_digest(amd)}": (oci, amd),
            f"{base}/blobs/{_digest(config)}": ("", config),
            f"{base}/blobs/{_digest(layer)}": ("", layer),
        }
    )


def test_warm_follows_the_index_to_linux_amd64_and_drains_every_blob() -> None:
    cache = fake_image("/v2/library/app")
    [w] = ops.warm(demo(), cache, ["app:1.0"])
    assert w.ok and w.blobs == 2 and w.bytes == len(b'{"os":"linux"}') + 1100, w
    assert w.digest == _digest(cache.objects[cache.requests[1][2]][1])
    assert [r[0] for r in cache.requests] == ["get", "get", "drain", "drain"]
    assert all(r[1] == 5000 for r in cache.requests)


def test_warm_uses_the_zot_prefix() -> None:
    plex = with_registry(demo(), engine=Engine.ZOT)
    [w] = ops.warm(plex, fake_image("/v2/docker.io/library/app"), ["docker.io/library/app:1.0"])
    assert w.ok, w


def test_warm_reports_each_failure_and_goes_on() -> None:
    cache = fake_image("/v2/library/app")
    missing_blob = dict(cache.objects)
    del missing_blob[next(k for k in missing_blob if k.endswith(_digest(b"layer-bytes" * 100)))]
    seen: list[ops.Warmed] = []
    results = ops.warm(
        demo(), cache, ["app:2.0", "quay.io/a/b:1", "Bad Ref", "app:1.0"], seen.append
    )
    assert [w.ok for w in results] == [False, False, False, True]
    assert seen == results
    assert "HTTP 404" in (results[0].error or "")
    assert "not an upstream" in (results[1].error or "")
    assert "not an image reference" in (results[2].error or "")
    [w] = ops.warm(demo(), FakeCache(missing_blob), ["app:1.0"])
    assert not w.ok and "blob sha256:" in (w.error or "")


def test_warm_without_an_amd64_manifest_fails() -> None:
    index = json.dumps(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "digest": "sha256:" + "b" * 64,
                    "platform": {"os": "linux", "architecture": "arm64"},
                }
            ],
        }
    )
    cache = FakeCache({"/v2/library/app/manifests/1": ("", index.encode())})
    [w] = ops.warm(demo(), cache, ["app:1"])
    assert not w.ok and "linux/amd64" in (w.error or "")


# --------------------------------------------------------------------------------------------
# stats parsing


def test_distribution_hits_from_a_real_log() -> None:
    # D1 and D2 stored from upstream (2 misses); D1 served again (1 hit); the HEAD and the 404
    # are not blob downloads; the manifest's scheduler entry is not a blob.
    assert ops.distribution_hits(LOG) == (1, 2)
    assert ops.distribution_hits("") == (0, 0)


def test_distribution_hits_count_containerd_mirror_requests() -> None:
    # containerd sends `?ns=<upstream>` on every request to a mirror (seen in the real run).
    log = (
        f'10.77.0.31 - - [22/Nov/2026:01:30:00 +0000] "GET /v2/library/plextest/blobs/{D1}'
        f'?ns=docker.io HTTP/1.1" 200 197 "" "containerd/1.6.20"\n'
    )
    assert ops.distribution_hits(LOG + log) == (2, 2)


def test_parse_curl_output() -> None:
    r = cache_mod._parse_curl('{"repositories":[]}\n%PLEX%\n200\napplication/json; charset=utf-8')
    assert (r.status, r.content_type, r.body) == (
        200,
        "application/json; charset=utf-8",
        '{"repositories":[]}',
    )
    assert cache_mod._parse_curl("curl: (7) refused").status == 0


def test_catalog_follows_pages() -> None:
    cache = FakeCache(
        {
            "/v2/_catalog?n=2": ("", b'{"repositories":["a","b"]}'),
            "/v2/_catalog?n=2&last=b": ("", b'{"repositories":["c"]}'),
        }
    )
    assert catalog._catalog(cache, 5000, page_size=2) == ["a", "b", "c"]


def test_parse_tag_paths() -> None:
    root = "/var/lib/docker-registry/docker.io/docker/registry/v2/repositories"
    out = "\n".join(
        [
            f"{root}/library/plextest/_manifests/tags/1.0/current",
            f"{root}/rancher/rke2-runtime/_manifests/tags/v1/current",
            f"{root}/library/plextest/_manifests/tags/0.9/current",
        ]
    )
    assert ops.parse_tag_paths(out) == {
        "library/plextest": ["0.9", "1.0"],
        "rancher/rke2-runtime": ["v1"],
    }


# What zot's /metrics answers (promhttp text exposition of the counters declared in
# project-zot/zot pkg/extensions/monitoring/extension.go) after: busybox pulled cold (its index
# and one platform manifest synced from the upstream, both served), then twice warm; nginx
# pulled cold once.
ZOT_METRICS = """# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 71
# HELP zot_http_requests_total Total number of http request in zot
# TYPE zot_http_requests_total counter
zot_http_requests_total{code="200",method="GET"} 14
zot_http_requests_total{code="404",method="GET"} 1
# HELP zot_info Server general information
# TYPE zot_info gauge
zot_info{binaryType="-sync",commit="6d19b44",goVersion="go1.24",version="v2.1.20"} 0
# HELP zot_repo_downloads_total Total number times an image was downloaded
# TYPE zot_repo_downloads_total counter
zot_repo_downloads_total{repo="docker.io/library/busybox"} 6
zot_repo_downloads_total{repo="docker.io/library/nginx"} 2
# HELP zot_repo_storage_bytes Storage used per zot repo
# TYPE zot_repo_storage_bytes gauge
zot_repo_storage_bytes{repo="docker.io/library/busybox"} 2.166784e+06
# HELP zot_repo_uploads_total Total number times an image was uploaded
# TYPE zot_repo_uploads_total counter
zot_repo_uploads_total{repo="docker.io/library/busybox"} 2
zot_repo_uploads_total{repo="docker.io/library/nginx"} 2
"""


def test_zot_counters_sum_by_repo() -> None:
    assert zot_metrics.counters(ZOT_METRICS, zot_metrics.DOWNLOADS) == {
        "docker.io/library/busybox": 6.0,
        "docker.io/library/nginx": 2.0,
    }
    assert zot_metrics.counters(ZOT_METRICS, "zot_repo_storage_bytes") == {
        "docker.io/library/busybox": 2166784.0
    }


def test_zot_hits_and_misses_from_its_metrics() -> None:
    counts = zot_metrics.hits_and_misses(ZOT_METRICS)
    # busybox: 2 synced (misses), 6 - 2 served from the cache; nginx: 2 synced, 0 hits.
    assert counts == zot_metrics.CacheCounts(hits=4, misses=4, downloads=8)
    assert zot_metrics.hits_and_misses("# metrics extension off\n") is None


def test_stats_for_zot_over_a_fake_cache() -> None:
    plex = demo().model_copy(
        update={"registry": demo().registry.model_copy(update={"engine": Engine.ZOT})}
    )
    cache = FakeCache(
        {
            "/v2/_catalog?n=1000": (
                "application/json",
                b'{"repositories":["docker.io/library/busybox"]}',
            ),
            "/v2/docker.io/library/busybox/tags/list": ("application/json", b'{"tags":["1.36"]}'),
            "/metrics": ("text/plain; version=0.0.4", ZOT_METRICS.encode()),
        }
    )
    st = ops.stats(plex, cache, "incus")
    assert (st.hits, st.misses) == (4, 4)
    assert st.repositories == (ops.Repository("docker.io", "library/busybox", ("1.36",)),)
    assert "zot_repo_downloads_total" in st.note and "8 manifests served" in st.note
    off = FakeCache({k: v for k, v in cache.objects.items() if k != "/metrics"})
    st = ops.stats(plex, off, "incus")
    assert (st.hits, st.misses) == (None, None) and "HTTP 404" in st.note


def test_stats_for_distribution_over_a_fake_cache() -> None:
    @dataclass
    class Cache(FakeCache):
        def tag_paths(self, upstream: str) -> str:
            return "/x/repositories/library/plextest/_manifests/tags/1.0/current\n"

        def access_log(self, upstream: str) -> str:
            return LOG

    cache = Cache(
        {"/v2/_catalog?n=1000": ("application/json", b'{"repositories":["library/plextest"]}')}
    )
    st = ops.stats(demo(), cache, "incus")
    assert st.to_json() == {
        "plex": "demo",
        "engine": "distribution",
        "runtime": "incus",
        "repositories": [{"upstream": "docker.io", "name": "library/plextest", "tags": ["1.0"]}],
        "size_bytes": 1234,
        "hits": 1,
        "misses": 2,
        "note": st.note,
    }


# --------------------------------------------------------------------------------------------
# registry up on Incus: the plan covers the registry alone
