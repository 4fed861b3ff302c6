"""Release downloads: checksum verification, the offline cache, channel resolution, asset URLs.

Everything is served from 127.0.0.1 by tests.fixtures.release_server; the RKE2 release is the
STAND-IN built by tests.fixtures.build_standin, fetched through the production code path.
"""

from __future__ import annotations

import datetime
import hashlib
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plex.errors import DownloadError
from plex.model.plex import KubernetesConfig, ZotConfig
from plex.store import downloads, releases
from plex.store.downloads import fetch, parse_checksums, redirect_target
from tests.fixtures.build_standin import STANDIN_VERSION, build_standin_rke2
from tests.fixtures.release_server import ReleaseServer, serve_directory
from tests.fixtures.zot_release import zot_release_dir

PAYLOAD = b"stand-in artifact for tests\n" * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "rel").mkdir(parents=True)
    (root / "rel" / "tool.bin").write_bytes(PAYLOAD)
    (root / "rel" / "SHA256SUMS").write_text(f"{'0' * 64}  other.bin\n{DIGEST}  tool.bin\n")
    return root


@pytest.fixture
def server(site: Path) -> Iterator[ReleaseServer]:
    with serve_directory(site) as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_fetch_verifies_a_given_digest_and_files_it_by_digest(
    server: ReleaseServer, cache: Path
) -> None:
    got = fetch(f"{server.url}/rel/tool.bin", sha256=DIGEST, cache=cache)
    assert got.path == cache / DIGEST / "tool.bin"
    assert got.path.read_bytes() == PAYLOAD
    assert got.sha256 == DIGEST
    assert got.url == f"{server.url}/rel/tool.bin"
    assert server.hits["/rel/tool.bin"] == 1


def test_cached_file_is_reused_without_network(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    first = fetch(url, sha256=DIGEST, cache=cache)
    server.stop()
    start = time.monotonic()
    again = fetch(url, sha256=DIGEST.upper(), cache=cache)  # digests compare case-insensitively
    assert time.monotonic() - start < 1.0
    assert again.path == first.path
    assert server.hits["/rel/tool.bin"] == 1


def test_digest_from_a_checksum_file_and_offline_reuse(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    sums = f"{server.url}/rel/SHA256SUMS"
    got = fetch(url, checksum_url=sums, cache=cache)
    assert got.sha256 == DIGEST
    assert got.path.with_name("tool.bin.sha256").read_text() == f"{DIGEST}  tool.bin\n"
    server.stop()
    again = fetch(url, checksum_url=sums, cache=cache)
    assert again == got
    assert server.hits == {"/rel/tool.bin": 1, "/rel/SHA256SUMS": 1}


def test_wrong_digest_fails_and_leaves_nothing(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    wrong = "ab" * 32
    with pytest.raises(DownloadError) as err:
        fetch(url, sha256=wrong, cache=cache)
    msg = str(err.value)
    assert url in msg and wrong in msg and DIGEST in msg
    assert [p.name for p in (cache / wrong).iterdir() if not p.name.endswith(".lock")] == []


def test_wrong_digest_in_checksum_file_names_the_file(
    server: ReleaseServer, site: Path, cache: Path
) -> None:
    (site / "rel" / "SHA256SUMS").write_text(f"{'cd' * 32}  tool.bin\n")
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        fetch(
            f"{server.url}/rel/tool.bin", checksum_url=f"{server.url}/rel/SHA256SUMS", cache=cache
        )
    assert f"{server.url}/rel/SHA256SUMS" in str(err.value)
    assert not list(cache.rglob("tool.bin"))


def test_corrupt_cache_is_fetched_again(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    path = fetch(url, sha256=DIGEST, cache=cache).path
    path.write_bytes(b"bit rot")
    assert fetch(url, sha256=DIGEST, cache=cache).path.read_bytes() == PAYLOAD
    assert server.hits["/rel/tool.bin"] == 2


def test_corrupt_cache_offline_fails_clearly(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    path = fetch(url, checksum_url=f"{server.url}/rel/SHA256SUMS", cache=cache).path
    path.write_bytes(b"bit rot")
    server.stop()
    with pytest.raises(DownloadError) as err:
        fetch(url, checksum_url=f"{server.url}/rel/SHA256SUMS", cache=cache)
    msg = str(err.value)
    assert "cannot reach" in msg and "was corrupt" in msg and str(path) in msg
    assert hashlib.sha256(b"bit rot").hexdigest() in msg
    assert not path.exists()


def test_http_error_names_the_url(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/missing.bin"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(url, sha256=DIGEST, cache=cache)
    assert url in str(err.value)


def test_unreachable_host_names_the_url(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    server.stop()  # the port is closed now: connection refused
    with pytest.raises(DownloadError, match="cannot reach") as err:
        fetch(url, sha256=DIGEST, cache=cache)
    assert url in str(err.value)
    assert err.value.hint


def test_checksum_file_without_the_entry(server: ReleaseServer, cache: Path) -> None:
    with pytest.raises(DownloadError, match=r"lists no sha256 for renamed\.bin"):
        fetch(
            f"{server.url}/rel/tool.bin",
            checksum_url=f"{server.url}/rel/SHA256SUMS",
            checksum_name="renamed.bin",
            cache=cache,
        )
    assert server.hits["/rel/tool.bin"] == 0


def test_fetch_refuses_to_download_unverified(cache: Path) -> None:
    with pytest.raises(ValueError, match="needs sha256 or checksum_url"):
        fetch("http://127.0.0.1:9/x.bin", cache=cache)


def test_default_cache_is_under_the_plex_cache_dir(
    server: ReleaseServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "plexcache"))
    got = fetch(f"{server.url}/rel/tool.bin", sha256=DIGEST)
    assert got.path == tmp_path / "plexcache" / "downloads" / DIGEST / "tool.bin"


def test_parallel_fetches_download_once(server: ReleaseServer, cache: Path) -> None:
    url = f"{server.url}/rel/tool.bin"
    results: list[downloads.Downloaded] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(url, checksum_url=f"{server.url}/rel/SHA256SUMS", cache=cache))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {r.path for r in results} == {results[0].path}
    assert results[0].path.read_bytes() == PAYLOAD
    assert server.hits["/rel/tool.bin"] == 1
    assert not [p for p in results[0].path.parent.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{DIGEST}  tool.bin\n", DIGEST),
        (f"{DIGEST} *tool.bin\n", DIGEST),  # sha256sum --binary
        (f"# comment\n{'1' * 64}  a\n{DIGEST}  ./dist/tool.bin\n", DIGEST),
        (f"{DIGEST.upper()}\n", DIGEST),  # a bare .sha256 file holding one digest
    ],
)
def test_parse_checksums_formats(text: str, expected: str) -> None:
    assert parse_checksums(text, "tool.bin", source="SUMS") == expected


def test_parse_checksums_rejects_a_bare_digest_among_several() -> None:
    with pytest.raises(DownloadError, match=r"SUMS lists no sha256 for tool\.bin"):
        parse_checksums(f"{'1' * 64}\n{'2' * 64}\n", "tool.bin", source="SUMS")


# --- releases ----------------------------------------------------------------------------------


def test_rke2_asset_urls_escape_the_plus() -> None:
    kube = KubernetesConfig(version="v1.31.4+rke2r1")
    rel = releases.rke2_release(kube)
    base = "https://github.com/rancher/rke2/releases/download/v1.31.4%2Brke2r1"
    assert rel.version == "v1.31.4+rke2r1"
    assert [(a.name, a.url, a.checksum_url, a.optional) for a in rel.assets] == [
        (
            "rke2.linux-amd64.tar.gz",
            f"{base}/rke2.linux-amd64.tar.gz",
            f"{base}/sha256sum-amd64.txt",
            False,
        ),
        (
            "rke2-images.linux-amd64.tar.zst",
            f"{base}/rke2-images.linux-amd64.tar.zst",
            f"{base}/sha256sum-amd64.txt",
            True,
        ),
        (
            "rke2-images.linux-amd64.txt",
            f"{base}/rke2-images.linux-amd64.txt",
            f"{base}/sha256sum-amd64.txt",
            True,
        ),
    ]
    assert rel.digest_input() == {
        "product": "rke2",
        "version": "v1.31.4+rke2r1",
        "assets": [
            {
                "name": "rke2.linux-amd64.tar.gz",
                "url": f"{base}/rke2.linux-amd64.tar.gz",
                "sha256": None,
                "checksum_url": f"{base}/sha256sum-amd64.txt",
            }
        ],
    }


def test_rke2_release_url_mirror_with_trailing_slash() -> None:
    kube = KubernetesConfig(version="v1.30.8+rke2r1", release_url="http://mirror.test/rke2/")
    tarball = releases.rke2_release(kube).asset("rke2.linux-amd64.tar.gz")
    assert tarball.url == "http://mirror.test/rke2/v1.30.8%2Brke2r1/rke2.linux-amd64.tar.gz"


@pytest.fixture
def channels(tmp_path: Path) -> Iterator[ReleaseServer]:
    (tmp_path / "empty").mkdir()
    with serve_directory(tmp_path / "empty") as srv:
        # Like update.rke2.io: a redirect to the release's tag page (never fetched itself).
        srv.redirects["/v1-release/channels/stable"] = (
            f"{srv.url}/rancher/rke2/releases/tag/v1.31.4%2Brke2r1"
        )
        srv.redirects["/v1-release/channels/v1.30"] = "/rancher/rke2/releases/tag/v1.30.8+rke2r1"
        srv.redirects["/v1-release/channels/broken"] = f"{srv.url}/somewhere/else"
        yield srv


def test_channel_resolves_through_the_redirect_and_is_cached_for_the_day(
    channels: ReleaseServer, cache: Path
) -> None:
    kube = KubernetesConfig(channel="stable", channel_url=f"{channels.url}/v1-release/channels")
    assert releases.rke2_release(kube, cache=cache).version == "v1.31.4+rke2r1"
    relative = kube.model_copy(update={"channel": "v1.30"})
    assert releases.rke2_release(relative, cache=cache).version == "v1.30.8+rke2r1"
    channels.stop()
    assert releases.rke2_release(kube, cache=cache).version == "v1.31.4+rke2r1"
    assert channels.hits["/v1-release/channels/stable"] == 1
    assert not any(p.startswith("/rancher/") for p in channels.hits)


def test_channel_resolution_of_another_day_needs_the_network(
    channels: ReleaseServer, cache: Path
) -> None:
    url = f"{channels.url}/v1-release/channels/stable"
    yesterday = datetime.date(2030, 1, 1)
    redirect_target(url, cache=cache, day=yesterday)
    channels.stop()
    with pytest.raises(DownloadError, match="cannot reach") as err:
        redirect_target(url, cache=cache, day=yesterday + datetime.timedelta(days=1))
    assert err.value.hint is not None and "v1.31.4%2Brke2r1" in err.value.hint
    assert "2030-01-01" in err.value.hint


def test_channel_that_does_not_name_a_version(channels: ReleaseServer, cache: Path) -> None:
    kube = KubernetesConfig(channel="broken", channel_url=f"{channels.url}/v1-release/channels")
    with pytest.raises(DownloadError, match="does not end in an RKE2 version"):
        releases.rke2_release(kube, cache=cache)


def test_fetch_rke2_gets_the_standin_release_through_the_real_path(
    tmp_path: Path, cache: Path
) -> None:
    build_standin_rke2(tmp_path / "release", bundle_containerd=False)
    with serve_directory(tmp_path / "release") as srv:
        kube = KubernetesConfig(version=STANDIN_VERSION, release_url=srv.url)
        path = releases.fetch_rke2(kube, cache=cache)
        tarball_path = f"/{STANDIN_VERSION}/rke2.linux-amd64.tar.gz"
        assert srv.hits[tarball_path] == 1
        assert srv.hits[f"/{STANDIN_VERSION}/sha256sum-amd64.txt"] == 1
    with tarfile.open(path) as tar:
        assert "bin/rke2" in tar.getnames()
    # Offline now: the verified tarball comes from the cache.
    assert releases.fetch_rke2(kube, cache=cache) == path


def test_standin_tarball_with_a_tampered_checksum_file_fails(tmp_path: Path, cache: Path) -> None:
    out = build_standin_rke2(tmp_path / "release", bundle_containerd=False)
    sums = out / "sha256sum-amd64.txt"
    sums.write_text(sums.read_text().replace(sums.read_text()[:8], "00000000", 1))
    with serve_directory(tmp_path / "release") as srv:
        kube = KubernetesConfig(version=STANDIN_VERSION, release_url=srv.url)
        with pytest.raises(DownloadError, match=r"checksum mismatch for .*%2Brke2r1"):
            releases.fetch_rke2(kube, cache=cache)


def test_zot_digest_from_config_or_from_the_release_checksums_file(
    tmp_path: Path, cache: Path
) -> None:
    site = tmp_path / "zot"
    assets = zot_release_dir(site, "v2.1.20")
    binary = assets["zot-linux-amd64"]
    digest = hashlib.sha256(binary).hexdigest()
    sums = (site / "v2.1.20" / "checksums.sha256.txt").read_text()
    assert f"{digest} *zot-linux-amd64\n" in sums  # the upstream line format
    with serve_directory(site) as srv:
        template = f"{srv.url}/{{version}}/zot-linux-amd64"
        from_file = ZotConfig(url=template)
        rel = releases.zot_release(from_file)
        assert rel.assets[0].checksum_url == f"{srv.url}/v2.1.20/checksums.sha256.txt"
        # The entry for zot-linux-amd64, not zot-linux-amd64-minimal or the arm64 one.
        assert releases.fetch_zot(from_file, cache=cache).read_bytes() == binary
        assert srv.hits["/v2.1.20/checksums.sha256.txt"] == 1
        assert "/v2.1.20/zot-linux-amd64.sha256" not in srv.hits
        minimal = ZotConfig(url=f"{srv.url}/{{version}}/zot-linux-amd64-minimal")
        assert (
            releases.fetch_zot(minimal, cache=cache).read_bytes()
            == assets["zot-linux-amd64-minimal"]
        )
        pinned = ZotConfig(url=template, sha256=digest)
        assert releases.zot_release(pinned).assets[0].sha256 == digest
        assert releases.fetch_zot(pinned, cache=cache) == cache / digest / "zot-linux-amd64"
        wrong = ZotConfig(url=template, sha256="ef" * 32)
        with pytest.raises(DownloadError, match="checksum mismatch"):
            releases.fetch_zot(wrong, cache=cache)
        missing = ZotConfig(url=f"{srv.url}/{{version}}/zot-freebsd-amd64")
        with pytest.raises(
            DownloadError,
            match=r"checksums.sha256.txt lists no sha256 for "
            r"zot-freebsd-amd64",
        ):
            releases.fetch_zot(missing, cache=cache)
