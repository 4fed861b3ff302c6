"""The registry's CI store for real, engine `distribution` (Debian's docker-registry 2.8; the
Zot binary cannot be downloaded here, its side is pinned in tests/unit/test_registry_store.py).

First the rendered store config on the host's own docker-registry binary (fast: no Incus), then
on the demo plex's registry node: skopeo pushes with the identity's login, a push without it is
refused (401), a pull works, and the image survives `plex reset` and a new registry node.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.registry import store
from plex.services import registry as ops
from plex.services.deploy import deploy
from plex.services.destroy import destroy
from plex.store.identity import require_identity
from tests.fixtures.child_process import start_server
from tests.fixtures.upstream_registry import make_oci_layout

from .conftest import ROOT

if TYPE_CHECKING:
    from typing import Any

    from plex.backends.incus.client import PylxdIncus
    from plex.model.plex import Plex
    from plex.services.bake import BakeResult

IMAGE = "ci/plex-build"


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--command-timeout", "120s", *args], capture_output=True, text=True
    )


def push(
    layout: Path, host: str, creds: str | None, tag: str = "1.0"
) -> subprocess.CompletedProcess[str]:
    login = [f"--dest-creds={creds}"] if creds else ["--dest-no-creds"]
    return skopeo(
        "copy",
        "--dest-tls-verify=false",
        *login,
        f"oci:{layout}:1.0",
        f"docker://{host}/{IMAGE}:{tag}",
    )


def inspect(host: str, creds: str | None, tag: str = "1.0") -> subprocess.CompletedProcess[str]:
    login = [f"--creds={creds}"] if creds else ["--no-creds"]
    return skopeo(
        "inspect", "--raw", "--tls-verify=false", *login, f"docker://{host}/{IMAGE}:{tag}"
    )


def anonymous_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0  # not listening (yet)


def refused(res: subprocess.CompletedProcess[str]) -> bool:
    text = res.stderr.lower()
    return res.returncode != 0 and ("401" in text or "unauthorized" in text)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ci-image")
    make_oci_layout(root, "1.0")
    return root


def test_rendered_store_config_on_the_real_docker_registry(
    test_plex: Plex, layout: Path, tmp_path: Path
) -> None:
    """store.distribution_config as rendered, only its paths and address moved to this test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = store.distribution_config(test_plex)
    cfg["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "data")
    cfg["auth"]["htpasswd"]["path"] = str(tmp_path / "htpasswd")
    cfg["http"]["addr"] = f"127.0.0.1:{port}"
    (tmp_path / "htpasswd").write_text(store.htpasswd(test_plex, "right-password"))
    (tmp_path / "config.yml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "registry.log"
    proc = start_server(["docker-registry", "serve", str(tmp_path / "config.yml")], log=log)
    try:
        host = f"127.0.0.1:{port}"

        deadline = time.monotonic() + 20
        while anonymous_status(f"http://{host}/v2/") != 401:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-800:]
            time.sleep(0.2)
        assert refused(push(layout, host, None)), "an anonymous push was accepted"
        assert refused(push(layout, host, "ci:wrong-password"))
        ok = push(layout, host, "ci:right-password")
        assert ok.returncode == 0, ok.stderr
        assert refused(inspect(host, None))
        got = inspect(host, "ci:right-password")
        assert got.returncode == 0 and json.loads(got.stdout)["layers"], got.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def store_up(
    incus: PylxdIncus, test_plex: Plex, baked: dict[str, BakeResult], layout: Path
) -> dict[str, Any]:
    destroy(test_plex, incus)  # the cache volume (and the store in it) may stay
    ops.up_incus(test_plex, incus, ROOT)
    host = store.host(test_plex)
    creds = f"{test_plex.registry.store.user}:{require_identity(test_plex).store_password}"
    wait_until_serving_store(host)
    return {"host": host, "creds": creds}


def wait_until_serving_store(host: str, timeout: float = 60) -> None:

    deadline = time.monotonic() + timeout
    while anonymous_status(f"http://{host}/v2/") != 401:
        assert time.monotonic() < deadline, f"the store at {host} never answered 401 on /v2/"
        time.sleep(1)


@pytest.mark.incus
def test_push_needs_the_identity_login_and_pull_works(
    test_plex: Plex, store_up: dict[str, Any], layout: Path
) -> None:
    host, creds = store_up["host"], store_up["creds"]
    assert refused(push(layout, host, None, "anon")), "an anonymous push was accepted"
    ok = push(layout, host, creds)
    assert ok.returncode == 0, ok.stderr
    assert refused(inspect(host, None))
    got = inspect(host, creds)
    assert got.returncode == 0, got.stderr
    store_up["manifest"] = got.stdout


@pytest.mark.incus
def test_the_pushed_image_survives_reset_and_a_new_registry_node(
    incus: PylxdIncus, test_plex: Plex, store_up: dict[str, Any]
) -> None:
    host, creds = store_up["host"], store_up["creds"]
    assert "manifest" in store_up, "the push test did not run first"
    deploy(test_plex, incus, ROOT, replace=["master"])  # what `plex reset` does
    got = inspect(host, creds)
    assert got.returncode == 0 and got.stdout == store_up["manifest"], got.stderr
    ops.up_incus(test_plex, incus, ROOT, replace=True)  # a new registry node, same volume
    wait_until_serving_store(host)
    got = inspect(host, creds)
    assert got.returncode == 0 and got.stdout == store_up["manifest"], got.stderr
    destroy(test_plex, incus)
