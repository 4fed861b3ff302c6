"""The registry cache on real Incus, engine `distribution` (Debian's docker-registry; the Zot
binary cannot be downloaded here): the demo plex's nodes pull a test image by its upstream
name (docker.io/library/plextest:1.0) through containerd, and the stand-in upstream's access
log says how often the cache went upstream for each blob.

Distribution 2.8 may fetch a blob from its upstream twice on a cold miss (one GET stores it,
and racing it one may stream it to the client: registry/proxy/proxyblobstore.go ServeBlob);
measured here as 1 or 2 from run to run, so that is what "fetched by the cache once" accepts.
What matters is that it never grows with the number of nodes, resets, or registry
replacements: every later count is exactly 0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from plex.backends.docker import SdkDocker
from plex.backends.incus.protocol import Incus
from plex.deploy.spec import registry_volume
from plex.model import topology
from plex.model.plex import Engine, Plex
from plex.registry.mirrors import RKE2_CERTS_D
from plex.services import registry as ops
from plex.services.deploy import deploy
from plex.services.destroy import destroy

from .conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from plex.backends.incus.client import PylxdIncus
    from plex.services.bake import BakeResult
    from tests.fixtures.upstream_registry import Upstream

pytestmark = pytest.mark.incus

IMAGE = "docker.io/library/plextest:1.0"
WARM_REPO = "library/plexwarm"
# docker-registry 2.8 on a cold miss: one GET stores the blob and, racing it, one may stream it
# to the client (seen here: sometimes 2, sometimes 1). Never 0, never more; nothing afterwards.
COLD_MISS_FETCHES = (1, 2)


def settled(upstream: Upstream, digests: Iterable[str]) -> dict[str, int]:
    """Upstream fetch counts once the cache's background store GETs are done (an upstream logs
    a request when it completes, which can be after the client's pull returned)."""
    last = fetches(upstream, digests)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = fetches(upstream, digests)
        if now == last:
            return now
        last = now
    return last


def cold_miss(counts: dict[str, int]) -> bool:
    return all(n in COLD_MISS_FETCHES for n in counts.values()) and bool(counts)


CTR = ["ctr", "--address", "/run/k3s/containerd/containerd.sock", "-n", "k8s.io"]
TIMES: dict[str, float] = {}


def pull(incus: PylxdIncus, node: str, image: str = IMAGE) -> float:
    """Pull `image` on `node` through containerd with the hosts.toml RKE2 generated from the
    node's registries.yaml (what the kubelet uses); seconds taken."""
    t0 = time.monotonic()
    res = incus.exec(node, [*CTR, "images", "pull", "--hosts-dir", RKE2_CERTS_D, image])
    took = time.monotonic() - t0
    assert res.returncode == 0, f"{node}: {res.output[-1500:]}"
    listed = incus.exec(node, [*CTR, "images", "ls", "-q"]).stdout.split()
    assert image in listed, listed
    return took


def uuid_of(incus: Incus, plex: Plex, name: str) -> str:
    return incus.observe(plex.name).instances[name].uuid


def _push_warm_image(upstream: Upstream, workdir: Path) -> tuple[str, ...]:
    """A second test image with its own blobs, in the upstream only (for `warm`)."""
    blobs = workdir / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"plex registry warm test\n" * 3000
        info = tarfile.TarInfo("plexwarm.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer, layer_size = blob(gzip.compress(raw.getvalue(), mtime=0))
    config, config_size = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()],
                },
            }
        ).encode()
    )
    manifest, manifest_size = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config,
                    "size": config_size,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer,
                        "size": layer_size,
                    }
                ],
            }
        ).encode()
    )
    (workdir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (workdir / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest,
                        "size": manifest_size,
                        "annotations": {"org.opencontainers.image.ref.name": "1.0"},
                    }
                ],
            }
        )
    )
    host = upstream.url.removeprefix("http://")
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"oci:{workdir}:1.0",
            f"docker://{host}/{WARM_REPO}:1.0",
        ],
        check=True,
    )
    return (layer, config)


def fetches(upstream: Upstream, digests: Iterable[str]) -> dict[str, int]:
    """Upstream blob GETs per digest so far (HEADs are not fetches)."""
    log = upstream.log.read_text(errors="replace")
    return {d: len(re.findall(rf'"GET /v2/[^ ]*/blobs/{re.escape(d)} ', log)) for d in digests}


@pytest.fixture(scope="module")
def registry_up(incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult]) -> dict[str, Any]:
    # Start from nothing and a cold cache: earlier modules of the session (the nightly's smoke
    # pull) may have deployed this plex and filled its cache volume.
    destroy(test_plex, incus, everything=True)
    up, plan, _ = ops.up_incus(test_plex, incus, ROOT)
    return {"up": up, "plan": plan}


def test_up_deploys_only_the_registry_on_its_cache_volume(
    incus: PylxdIncus, test_plex: Plex, registry_up: dict[str, Any]
) -> None:
    up = registry_up["up"]
    node = topology.registry_node(test_plex)
    assert node is not None
    assert [a.node for w in registry_up["plan"].waves for a in w] == [node.name]
    assert set(incus.observe(test_plex.name).instances) == {node.name}
    assert incus.volume_exists(test_plex.incus.pool, registry_volume(test_plex))
    assert up.endpoints == (f"http://{node.address}:5000",)
    # The volume is the engine's data root inside the node.
    out = incus.exec(node.name, ["findmnt", "-n", "-o", "TARGET", "/var/lib/docker-registry"])
    assert out.stdout.strip() == "/var/lib/docker-registry", out.output
    reply = ops.IncusCache(test_plex, incus).get(5000, "/v2/")
    assert reply.status == 200
    again, plan, result = ops.up_incus(test_plex, incus, ROOT)
    assert plan.empty and result is None
    assert again.actions == (f"{node.name}: keep",)


def test_warm_pulls_through_the_cache_so_nodes_never_go_upstream(
    incus: PylxdIncus,
    test_plex: Plex,
    registry_up: dict[str, Any],
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    blobs = _push_warm_image(upstream, tmp_path / "warm")
    cache = ops.IncusCache(test_plex, incus)
    t0 = time.monotonic()
    results = ops.warm(
        test_plex,
        cache,
        [f"docker.io/{WARM_REPO}:1.0", "docker.io/library/absent:1.0", "quay.io/x/y:1"],
    )
    TIMES["warm (2 blobs)"] = time.monotonic() - t0
    ok, absent, foreign = results
    assert ok.ok and ok.blobs == 2 and ok.bytes > 0, ok
    assert not absent.ok and "HTTP 404" in (absent.error or ""), absent
    assert not foreign.ok and "not an upstream" in (foreign.error or ""), foreign
    warmed = settled(upstream, blobs)
    assert cold_miss(warmed), warmed
    # Warm again: all hits.
    assert ops.warm(test_plex, cache, [f"docker.io/{WARM_REPO}:1.0"])[0].ok
    assert fetches(upstream, blobs) == warmed


def test_default_warm_list_is_the_rke2_release_list(test_plex: Plex) -> None:
    images = ops.default_image_list(test_plex)
    # The stand-in release lists three images (tests/fixtures/build_standin.py).
    assert len(images) == 3 and all(i.startswith("docker.io/rancher/") for i in images), images


@pytest.fixture(scope="module")
def cluster(incus: PylxdIncus, test_plex: Plex, registry_up: dict[str, Any]) -> bool:
    before = uuid_of(incus, test_plex, "demo-registry1")
    deploy(test_plex, incus, ROOT)
    assert uuid_of(incus, test_plex, "demo-registry1") == before, "deploy replaced the registry"
    return True


def test_two_nodes_pull_by_upstream_name_and_the_cache_fetches_each_blob_once(
    incus: PylxdIncus, test_plex: Plex, cluster: bool, upstream: Upstream
) -> None:
    # The upstream is shared by the whole session: count from here.
    base = fetches(upstream, upstream.blobs)
    TIMES["cold pull demo-agent1"] = pull(incus, "demo-agent1")
    first = settled(upstream, upstream.blobs)
    assert cold_miss({d: first[d] - base[d] for d in first}), (base, first)
    TIMES["cached pull demo-server2"] = pull(incus, "demo-server2")
    assert fetches(upstream, upstream.blobs) == first, "the second node went upstream"
    # Warmed earlier: a node pulls it with no upstream blob request at all.
    warm_blobs = [d for d in _blob_digests(upstream.log) if d not in upstream.blobs]
    before = fetches(upstream, warm_blobs)
    pull(incus, "demo-agent2", f"docker.io/{WARM_REPO}:1.0")
    assert fetches(upstream, warm_blobs) == before


def _blob_digests(log: Path) -> set[str]:
    return set(
        re.findall(r'"GET /v2/[^ ]*/blobs/(sha256:[0-9a-f]{64}) ', log.read_text(errors="replace"))
    )


def test_stats_show_repositories_size_hits_and_misses(
    incus: PylxdIncus, test_plex: Plex, cluster: bool
) -> None:
    st = ops.stats(test_plex, ops.IncusCache(test_plex, incus), "incus")
    repos = {(r.upstream, r.name): r.tags for r in st.repositories}
    assert repos[("docker.io", "library/plextest")] == ("1.0",)
    assert repos[("docker.io", WARM_REPO)] == ("1.0",)
    assert st.size_bytes is not None and st.size_bytes > 1000
    # 4 blobs stored (2 per image); plextest's 2 were then served again to demo-server2, and
    # the warm image's 2 again by the second warm and to demo-agent2. Plus RKE2's runtime
    # image, pulled by every kube node at first start: 2 blobs stored, then hits for the rest.
    kube = sum(1 for n in topology.nodes(test_plex) if n.role.is_kube)
    assert st.misses == 4 + 2, st
    assert st.hits == 6 + 2 * (kube - 1), st
    assert "absent" not in json.dumps(st.to_json())


def test_after_reset_pulls_come_from_the_cache(
    incus: PylxdIncus, test_plex: Plex, cluster: bool, upstream: Upstream
) -> None:
    registry = uuid_of(incus, test_plex, "demo-registry1")
    agent = uuid_of(incus, test_plex, "demo-agent1")
    deploy(test_plex, incus, ROOT, replace=["master"])  # what `plex reset` does
    assert uuid_of(incus, test_plex, "demo-registry1") == registry
    assert uuid_of(incus, test_plex, "demo-agent1") != agent
    before = fetches(upstream, upstream.blobs)
    TIMES["after reset: pull demo-agent1"] = pull(incus, "demo-agent1")
    TIMES["after reset: pull demo-server2"] = pull(incus, "demo-server2")
    assert fetches(upstream, upstream.blobs) == before, "a reset node went upstream"


def test_replacing_the_registry_node_keeps_its_cache(
    incus: PylxdIncus, test_plex: Plex, cluster: bool, upstream: Upstream
) -> None:
    registry = uuid_of(incus, test_plex, "demo-registry1")
    up, plan, _ = ops.up_incus(test_plex, incus, ROOT, replace=True)
    assert [a.node for w in plan.waves for a in w] == ["demo-registry1"]
    assert uuid_of(incus, test_plex, "demo-registry1") != registry
    assert not up.volume_created
    before = fetches(upstream, upstream.blobs)
    TIMES["new registry node: pull demo-agent2"] = pull(incus, "demo-agent2")
    assert fetches(upstream, upstream.blobs) == before, "the new registry node went upstream"


def test_destroy_keeps_the_cache_volume_unless_everything(
    incus: PylxdIncus, test_plex: Plex, cluster: bool, upstream: Upstream
) -> None:
    destroy(test_plex, incus)
    assert incus.observe(test_plex.name).instances == {}
    volume = registry_volume(test_plex)
    assert incus.volume_exists(test_plex.incus.pool, volume)
    ops.up_incus(test_plex, incus, ROOT)
    before = fetches(upstream, upstream.blobs)
    warmed = ops.warm(test_plex, ops.IncusCache(test_plex, incus), [IMAGE])
    assert warmed[0].ok, warmed
    assert fetches(upstream, upstream.blobs) == before, "the cache did not survive destroy"
    destroy(test_plex, incus, everything=True)
    assert not incus.volume_exists(test_plex.incus.pool, volume)
    print("\nregistry timings:", json.dumps({k: round(v, 2) for k, v in TIMES.items()}))


# ============================================================================================
# registry.runtime: docker, on a real Docker engine (bin/setup-docker starts one; skipped
# outside CI when none is reachable). The registry:2 image cannot be pulled here, so the test
# imports a stand-in built from the host's docker-registry binary (the same Distribution 2.8)
# at registry:2's binary path.

DOCKER_IMAGE = "plex-test/registry:2"


def _docker() -> SdkDocker:
    from plex.errors import BackendError

    try:
        return SdkDocker()
    except BackendError as e:
        # bin/setup-docker (run by `make test` and .ci/run) starts one: in CI its absence is a
        # failure, not a skip.
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Docker engine in CI: {e.message}", pytrace=False)
        pytest.skip(f"no Docker engine: {e.message} (run bin/setup-docker)")


def _ldd(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return [p for p in re.findall(r"(/\S+) \(0x", out) if Path(p).exists()]


def _stand_in_registry_image(docker: SdkDocker) -> None:
    """/bin/registry (Debian's docker-registry) and `find`, with their shared libraries."""
    if docker.has_image(DOCKER_IMAGE):
        return
    files = {"/bin/registry": "/usr/bin/docker-registry", "/usr/bin/find": "/usr/bin/find"}
    for b in list(files.values()):
        for lib in _ldd(b):
            files[lib] = lib
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for dest, src in files.items():
            tar.add(str(Path(src).resolve()), arcname=dest.lstrip("/"))
        for d in ("tmp", "etc/docker/registry", "var/lib/docker-registry"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
    repo, tag = DOCKER_IMAGE.split(":")
    docker.client.api.import_image_from_data(raw.getvalue(), repository=repo, tag=tag)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.docker
def test_runtime_docker_cache_survives_its_containers(
    session_project: str, upstream: Upstream
) -> None:
    from .conftest import bridge_address, demo_plex

    docker = _docker()
    _stand_in_registry_image(docker)
    gw = bridge_address()
    plex = demo_plex(
        session_project,
        **{
            "name": f"dk{session_project[-6:]}",
            "registry.runtime": "docker",
            "registry.port": _free_port(),
            "registry.upstreams": [{"name": "docker.io", "url": upstream.url}],
        },
    )
    images = {Engine.DISTRIBUTION: DOCKER_IMAGE}
    try:
        up = ops.up_docker(plex, docker, images)
        assert up.volume_created and up.actions == (f"{plex.name}-registry-docker.io: create",)
        # Host-network containers listen on the Docker host: here, the bridge's gateway. (The
        # plex checks refuse a registry node address equal to the gateway, so the plex keeps
        # its registry node address and the cache is reached at the host's explicitly.)
        cache = ops.DockerCache(plex, docker, host=gw)
        deadline = time.monotonic() + 30
        while cache.get(plex.registry.port, "/v2/").status != 200:
            assert time.monotonic() < deadline, docker.logs(f"{plex.name}-registry-docker.io")
            time.sleep(0.5)
        before = fetches(upstream, upstream.blobs)
        t0 = time.monotonic()
        [w] = ops.warm(plex, cache, [IMAGE])
        TIMES["docker: cold warm"] = time.monotonic() - t0
        assert w.ok and w.blobs == 2, w
        cold = settled(upstream, upstream.blobs)
        assert cold_miss({d: cold[d] - before[d] for d in cold}), (before, cold)
        st = ops.stats(plex, cache, "docker")
        assert [(r.name, r.tags) for r in st.repositories] == [("library/plextest", ("1.0",))]
        assert (st.hits, st.misses) == (0, 2), st
        assert st.size_bytes is None or st.size_bytes > 1000

        # Same spec: kept. Containers gone (down, volume kept), then up again: still warm.
        assert ops.up_docker(plex, docker, images).actions[0].endswith(": keep")
        assert ops.down_docker(plex, docker) == [f"{plex.name}-registry-docker.io"]
        ops.up_docker(plex, docker, images)
        deadline = time.monotonic() + 30
        while cache.get(plex.registry.port, "/v2/").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        t0 = time.monotonic()
        [w] = ops.warm(plex, cache, [IMAGE])
        TIMES["docker: cached warm"] = time.monotonic() - t0
        assert w.ok, w
        assert fetches(upstream, upstream.blobs) == cold, "the new container went upstream"
        assert ops.stats(plex, cache, "docker").hits == 2
    finally:
        ops.down_docker(plex, docker, everything=True)
    assert not docker.volume_exists(registry_volume(plex))
    print("\nregistry timings:", json.dumps({k: round(v, 2) for k, v in TIMES.items()}))
