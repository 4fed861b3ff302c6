"""The registry's CI store (plex.registry.store), checked against facts pinned from upstream
source: zot v2.1.20 and distribution v2.8.2 (Debian's docker-registry is 2.8.2+ds1).

Zot cannot run here (no download), so its semantics the store relies on are pinned as data
(ZOT_FACTS, each with its file and tag) and the rendered config is evaluated by the same rules.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bcrypt
import pytest

from plex.errors import ConfigError
from plex.model.identity import compute_identity
from plex.model.plex import Engine, Plex, Runtime, Upstream, ZotConfig
from plex.plexfile.load import load_plex
from plex.registry import store, zot, zot_keys
from plex.registry.engines import check_engine, engine_files
from tests.unit.registry_golden import CASES, golden_case
from tests.unit.test_packer_template import FixedKeyGen

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

REPO = Path(__file__).resolve().parents[2]
ZOT_TAG = "v2.1.20"
ZOT_FACTS = {
    "longest matching repositories glob decides": f"pkg/api/authz.go can() @ {ZOT_TAG}",
    "globs are doublestar (** crosses /, * does not)": f"pkg/api/authz.go imports "
    f"github.com/bmatcuk/doublestar/v4 @ {ZOT_TAG}",
    "anonymous requests use anonymousPolicy, logged-in ones defaultPolicy + policies[].users": (
        f"pkg/api/authz.go getGlobPatterns/isPermitted @ {ZOT_TAG}"
    ),
    "actions are read, create, update, delete": f"pkg/api/constants/consts.go @ {ZOT_TAG}",
    "htpasswd lines are user:bcrypt": f"pkg/api/htpasswd.go Reload/Authenticate @ {ZOT_TAG}",
    "a missing htpasswd file fails the start": f"pkg/api/controller.go Init @ {ZOT_TAG}",
    "on-demand sync maps a local repo to an upstream only through <destination>/<prefix>": (
        f"pkg/extensions/sync/content.go GetContentByLocalRepo; service.go SyncImage @ {ZOT_TAG}"
    ),
}


def doublestar(pattern: str, name: str) -> bool:
    """bmatcuk/doublestar's Match for the patterns plex renders (`**`, `*`, literals)."""
    rx = ""
    for part in re.split(r"(\*\*|\*)", pattern):
        rx += ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
    return re.fullmatch(rx, name) is not None


def zot_allows(config: dict[str, Any], repo: str, action: str, user: str | None) -> bool:
    """Zot's authz decision over a rendered config (ZOT_FACTS: longest glob wins)."""
    repos = config["http"]["accessControl"]["repositories"]
    matched = [p for p in repos if doublestar(p, repo)]
    if not matched:
        return False
    group = repos[max(matched, key=len)]
    if user is None:
        return action in group.get("anonymousPolicy", [])
    if action in group.get("defaultPolicy", []):
        return True
    return any(user in p["users"] and action in p["actions"] for p in group.get("policies", []))


def syncs(config: dict[str, Any], repo: str) -> bool:
    """Would zot's on-demand sync fetch local `repo` from an upstream (content.go)?"""
    for reg in config["extensions"]["sync"]["registries"]:
        for c in reg["content"]:
            pattern = "/".join([c["destination"].strip("/"), c["prefix"].strip("/") + "/"])
            if doublestar(pattern.strip("/"), repo):
                return True
    return False


def with_store(engine: Engine = Engine.ZOT, **store_changes: Any) -> Plex:
    plex = load_plex(REPO / "plexes" / "demo.yaml")
    st = plex.registry.store.model_copy(update={"enabled": True, **store_changes})
    reg = plex.registry.model_copy(update={"engine": engine, "store": st})
    return plex.model_copy(update={"registry": reg})


def test_zot_mirror_stays_anonymous_and_only_the_store_user_pushes_to_ci() -> None:
    config = zot.zot_config(with_store())
    mirrored = "docker.io/library/nginx"
    assert zot_allows(config, mirrored, "read", None)
    assert zot_allows(config, mirrored, "read", "ci")
    for action in ("create", "update", "delete"):
        assert not zot_allows(config, mirrored, action, "ci")
        assert not zot_allows(config, "ci/app", action, None)
        assert not zot_allows(config, "ci/team/app", action, "someone")
        assert zot_allows(config, "ci/team/app", action, "ci")
    assert not zot_allows(config, "ci/app", "read", None)
    assert zot_allows(config, "ci/app", "read", "ci")
    assert config["http"]["auth"] == {"htpasswd": {"path": store.ZOT_HTPASSWD}}


def test_zot_sync_never_touches_the_store_namespace() -> None:
    config = zot.zot_config(with_store())
    assert syncs(config, "docker.io/library/nginx")
    assert not syncs(config, "ci/app")
    assert not syncs(config, "ci/docker.io/app")


@pytest.mark.parametrize("version", zot_keys.known_versions())
def test_zot_store_config_has_only_keys_of_its_release(version: str) -> None:
    plex = with_store()
    reg = plex.registry.model_copy(
        update={"zot": plex.registry.zot.model_copy(update={"version": version})}
    )
    config = zot.zot_config(plex.model_copy(update={"registry": reg}))
    zot_keys.check_config(config, version)  # raises UnknownZotKeys otherwise
    # /metrics stays readable for `registry stats` where the release can say so.
    anonymous_metrics = "metrics" in config["http"]["accessControl"]
    assert anonymous_metrics == zot_keys.keys_for(version).accepts(
        "http.accessControl.metrics.anonymousPolicy"
    )


def test_without_the_store_zot_has_no_auth() -> None:
    plex = with_store(enabled=False)
    assert "auth" not in zot.zot_config(plex)["http"]


def test_htpasswd_line_is_bcrypt_and_stable() -> None:
    plex = with_store()
    line = store.htpasswd(plex, "s3cret-password")
    user, _, hashed = line.strip().partition(":")
    assert user == "ci" and hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(b"s3cret-password", hashed.encode())
    assert not bcrypt.checkpw(b"other", hashed.encode())
    assert store.htpasswd(plex, "s3cret-password") == line  # pushing again changes nothing


def test_distribution_store_is_a_separate_non_proxy_instance() -> None:
    plex = with_store(Engine.DISTRIBUTION)
    files = {f.path: f for f in engine_files(plex)}
    cfg = files[store.DISTRIBUTION_CONFIG]
    assert not cfg.secret and "password" not in cfg.content
    import yaml

    doc = yaml.safe_load(cfg.content)
    assert "proxy" not in doc  # a proxy refuses writes (registry/proxy, ErrUnsupported)
    assert doc["http"]["addr"] == ":5100"
    assert doc["auth"]["htpasswd"]["path"] == store.DISTRIBUTION_HTPASSWD
    assert doc["storage"]["filesystem"]["rootdirectory"] == "/var/lib/docker-registry/_store"
    assert store.info(plex) == {
        "endpoint": "http://10.77.0.5:5100",
        "host": "10.77.0.5:5100",
        "push_prefix": "10.77.0.5:5100/",
        "user": "ci",
        "engine": "distribution",
    }
    secret = store.secret_file(plex, "pw")
    assert (secret.mode, secret.group, secret.secret) == (0o640, "docker-registry", True)


def test_store_refuses_overlaps_with_the_cache() -> None:
    zot.zot_config(with_store(Engine.ZOT, port=5000))  # zot: the store shares zot's port
    with pytest.raises(ConfigError, match=r"registry\.store\.port"):
        engine_files(with_store(Engine.DISTRIBUTION, port=5000))
    with pytest.raises(ConfigError, match=r"registry\.store\.namespace"):
        zot.zot_config(with_store(namespace="docker.io"))
    plex = with_store()
    docker = plex.model_copy(
        update={"registry": plex.registry.model_copy(update={"runtime": Runtime.DOCKER})}
    )
    with pytest.raises(ConfigError, match=r"registry\.runtime: incus"):
        zot.zot_config(docker)


def _raised(check: Callable[[Plex], object], plex: Plex) -> str | None:
    try:
        check(plex)
    except ConfigError as e:
        return e.message
    return None


def _with_registry(plex: Plex, **changes: Any) -> Plex:
    return plex.model_copy(update={"registry": plex.registry.model_copy(update=changes)})


def test_check_engine_refuses_what_rendering_refuses() -> None:
    # `plex validate` checks the engine's rules without rendering: the same verdict, plex by
    # plex, as rendering the files (good ones pass both, broken ones fail both alike).
    insecure = Upstream(name="harbor.lab", url="https://harbor.lab", tls_verify=False)
    good = [with_store(e) for e in Engine] + [golden_case(c, e) for c in CASES for e in Engine]
    broken = [
        with_store(Engine.DISTRIBUTION, port=5000),
        with_store(namespace="docker.io"),
        _with_registry(with_store(), runtime=Runtime.DOCKER),
        _with_registry(golden_case("four", Engine.DISTRIBUTION), port=65534),
        _with_registry(golden_case("one", Engine.DISTRIBUTION), upstreams=(insecure,)),
        _with_registry(golden_case("one", Engine.ZOT), zot=ZotConfig(version="v1.0.0")),
    ]
    assert [(_raised(check_engine, p), _raised(engine_files, p)) for p in good] == [
        (None, None)
    ] * len(good)
    for p in broken:
        rendered = _raised(engine_files, p)
        assert rendered is not None
        assert _raised(check_engine, p) == rendered


def test_identity_holds_the_store_password_and_the_scan_looks_for_it() -> None:
    plex = with_store()
    ident = compute_identity(plex, None, FixedKeyGen())
    assert len(ident.store_password) == 40
    assert ("registry store password", ident.store_password) in list(ident.secret_needles([]))
    assert compute_identity(plex, ident, FixedKeyGen()).store_password == ident.store_password
    assert compute_identity(with_store(enabled=False), None, FixedKeyGen()).store_password == ""
    assert "store_password" not in repr(ident)  # repr=False


def test_auth_entry_is_the_containers_auth_format() -> None:
    entry = store.auth_entry("ci", "pw")
    assert base64.b64decode(entry["auth"]) == b"ci:pw"
    assert json.loads(json.dumps({"auths": {"h:1": entry}}))["auths"]["h:1"]["auth"]


def test_registry_login_cli(tmp_path: Path, state_dir: Path, cli: Cli) -> None:
    import yaml

    data = yaml.safe_load((REPO / "plexes" / "demo.yaml").read_text())
    data["registry"]["store"] = {"enabled": True}
    plex_file = tmp_path / "demo.yaml"
    plex_file.write_text(yaml.safe_dump(data))
    assert cli("identity", str(plex_file)).code == 0
    shown = cli("registry", "login", str(plex_file))
    assert shown.code == 0, shown.err
    assert "--password-stdin 10.77.0.5:5100" in shown.err
    password = cli("registry", "login", str(plex_file), "--password").out.strip()
    assert len(password) == 40 and password not in shown.out + shown.err
    auth = tmp_path / "auth.json"
    doc = cli("registry", "login", str(plex_file), "--authfile", str(auth), "-o", "json")
    assert json.loads(doc.out)["push_prefix"] == "10.77.0.5:5100/" and password not in doc.out
    assert auth.stat().st_mode & 0o777 == 0o600
    entry = json.loads(auth.read_text())["auths"]["10.77.0.5:5100"]["auth"]
    assert base64.b64decode(entry).decode() == f"ci:{password}"
    off = cli("registry", "login", "demo")
    assert off.code == 2 and "has no registry store" in off.err
