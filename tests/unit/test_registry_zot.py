"""Zot config rendering: golden files, documented key names, credentials file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plex.errors import ConfigError
from plex.model.plex import Engine, Plex, Upstream
from plex.plexfile.load import load_plex
from plex.registry import zot_keys
from plex.registry.credentials import parse_credentials
from plex.registry.engines import engine_files
from plex.registry.zot import (
    CREDENTIALS_PATH,
    DEFAULT_VERSION,
    destination,
    image,
    upstream_host,
    zot_config,
    zot_credentials,
    zot_files,
)

ROOT = Path(__file__).resolve().parents[2]
from tests.unit.registry_golden import (  # noqa: E402
    CASES,
    GOLDEN,
    bundle,
    case_credentials,
    check_golden,
    golden_case,
)


def load_case(name: str, engine: Engine = Engine.ZOT) -> Plex:
    return golden_case(name, engine)


@pytest.mark.parametrize("case", CASES)
def test_golden_zot_files(case: str) -> None:
    check_golden(f"{case}-zot.txt", bundle(engine_files(load_case(case))))


def test_golden_zot_files_with_credentials() -> None:
    files = engine_files(load_case("four"), case_credentials())
    check_golden("four-zot-credentials.txt", bundle(files))


# --- keys zot accepts, per release (plex/registry/zot_keys.json) -------------------------------

BEFORE_FIX = GOLDEN.parent / "zot" / "four-v2.1.2-rendered-before-the-fix.json"
SAMPLE_VERSIONS = ["v2.1.0", "v2.1.2", "v2.1.3", "v2.1.11", "v2.1.20"]


def with_version(plex: Plex, version: str) -> Plex:
    reg = plex.registry
    return plex.model_copy(
        update={
            "registry": reg.model_copy(
                update={"zot": reg.zot.model_copy(update={"version": version})}
            )
        }
    )


def test_the_key_data_names_its_upstream_source_for_every_key() -> None:
    data = json.loads(zot_keys.DATA.read_text())
    assert data["repository"] == "project-zot/zot"
    assert data["versions"][0] == "v2.1.0" and data["versions"][-1] == DEFAULT_VERSION
    for path, entry in data["keys"].items():
        assert entry["file"].startswith("pkg/") and entry["file"].endswith(".go"), path
        assert entry["since"] in data["versions"], path
    # The facts the issue is about, as zot's structs say them.
    assert zot_keys.key_source("extensions.sync.registries[].preserveDigest") == {
        "file": "pkg/extensions/config/sync/config.go",
        "since": "v2.1.3",
    }
    compat = zot_keys.key_source("http.compat")
    assert compat is not None and compat["since"] == "v2.1.2"


def test_the_check_refuses_what_plex_rendered_before_the_fix() -> None:
    """plex 0.1 rendered `preserveDigest` for its default zot v2.1.2, which refuses it."""
    before = json.loads(BEFORE_FIX.read_text())
    with pytest.raises(zot_keys.UnknownZotKeys) as e:
        zot_keys.check_config(before, "v2.1.2")
    assert e.value.keys == [f"extensions.sync.registries[{i}].preservedigest" for i in range(4)]
    assert "failed to load config due to unknown keys" in str(e.value)
    # The same document is fine for the release that introduced the key.
    zot_keys.check_config(before, "v2.1.3")


@pytest.mark.parametrize("version", SAMPLE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("creds_path", [CREDENTIALS_PATH, None])
def test_every_rendered_config_passes_its_releases_check(
    case: str, creds_path: str | None, version: str
) -> None:
    doc = zot_config(with_version(load_case(case), version), creds_path)
    assert zot_keys.unknown_keys(doc, version) == []
    regs = doc["extensions"]["sync"]["registries"]
    has_preserve = zot_keys.keys_for(version).accepts("extensions.sync.registries[].preserveDigest")
    assert all(("preserveDigest" in r) == has_preserve for r in regs)
    assert ("compat" in doc["http"]) == (version != "v2.1.0")


def test_the_default_release_keeps_docker_digests() -> None:
    doc = zot_config(load_case("four"))
    assert DEFAULT_VERSION == load_case("four").registry.zot.version == "v2.1.20"
    assert doc["http"]["compat"] == ["docker2s2"]
    assert all(r["preserveDigest"] is True for r in doc["extensions"]["sync"]["registries"])


def test_the_check_works_like_viper_and_mapstructure() -> None:
    doc = zot_config(load_case("one"))
    reg = doc["extensions"]["sync"]["registries"][0]
    reg["ONDEMAND"] = True  # viper lowercases keys: any case is accepted
    reg["bogus"] = {"deep": 1}  # reported once, at the outermost unknown key
    doc["storage"]["storageDriver"] = {"name": "s3", "anything": {"goes": 1}}  # map[string]any
    doc["storage"]["subPaths"] = {"/a": {"rootDirectory": "/a", "dedup": True}}
    assert zot_keys.unknown_keys(doc, "v2.1.20") == [
        "storage.subpaths./a.dedup",
        "extensions.sync.registries[0].bogus",
    ]
    # A newer release than the data knows is held to the newest known set.
    assert zot_keys.keys_for("v2.9.0").version == DEFAULT_VERSION


def test_a_zot_release_plex_has_no_keys_for_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"registry.zot.version: zot v2.0.4 is older than "
        r"v2.1.0",
    ):
        zot_config(with_version(load_case("one"), "v2.0.4"))


# --- content ----------------------------------------------------------------------------------


def test_pull_through_settings() -> None:
    cfg = zot_config(load_case("four"))
    assert cfg["http"] == {"address": "0.0.0.0", "port": "5000", "compat": ["docker2s2"]}
    assert cfg["storage"]["rootDirectory"] == "/var/lib/registry"
    regs = cfg["extensions"]["sync"]["registries"]
    assert [r["urls"] for r in regs] == [
        ["https://registry-1.docker.io"],
        ["https://ghcr.io"],
        ["https://quay.io"],
        ["https://registry.k8s.io"],
    ]
    for r, name in zip(regs, ("docker.io", "ghcr.io", "quay.io", "registry.k8s.io"), strict=True):
        assert r["onDemand"] is True
        assert r["preserveDigest"] is True
        assert r["tlsVerify"] is True
        assert r["content"] == [{"prefix": "**", "destination": f"/{name}"}]
        assert "pollInterval" not in r  # Docker Hub rate-limits polling


def test_port_is_a_string() -> None:
    plex = load_case("http")
    assert zot_config(plex)["http"]["port"] == "5050"


def test_credentials_file_only_when_the_plex_has_one() -> None:
    assert "credentialsFile" not in zot_config(load_case("one"))["extensions"]["sync"]
    sync = zot_config(load_case("four"))["extensions"]["sync"]
    assert sync["credentialsFile"] == CREDENTIALS_PATH
    assert "credentialsFile" not in zot_config(load_case("four"), None)["extensions"]["sync"]
    assert zot_config(load_case("four"), "/x.json")["extensions"]["sync"]["credentialsFile"] == (
        "/x.json"
    )


def test_files_without_credentials_do_not_point_at_a_missing_file() -> None:
    (only,) = zot_files(load_case("four"))
    assert "credentialsFile" not in json.loads(only.content)["extensions"]["sync"]


def test_credentials_file_is_secret_and_keyed_by_host() -> None:
    plex = load_case("four")
    creds = case_credentials()
    doc = zot_credentials(plex, creds)
    assert doc == {
        "registry-1.docker.io": {"username": "plexbot", "password": "FAKE-golden-docker-0001"},
        "quay.io": {"username": "plex+robot", "password": "FAKE:golden/0002"},
    }
    config, secret = zot_files(plex, creds)
    assert not config.secret
    assert "FAKE" not in config.content
    assert secret.secret and secret.mode == 0o600 and secret.path == CREDENTIALS_PATH
    assert "FAKE" not in repr(secret) and "FAKE" not in str(secret)


def test_credentials_for_an_unknown_upstream_are_refused() -> None:
    creds = parse_credentials("gcr.io: {username: a, password: b}\n", "creds.yaml")
    with pytest.raises(ConfigError, match=r"creds.yaml: gcr.io: 'gcr.io' is not an upstream"):
        zot_credentials(load_case("four"), creds)


def test_insecure_https_upstream() -> None:
    plex = load_case("one")
    plex = plex.model_copy(
        update={
            "registry": plex.registry.model_copy(
                update={
                    "upstreams": (
                        Upstream(name="harbor.lab", url="https://harbor.lab", tls_verify=False),
                    )
                }
            )
        }
    )
    (reg,) = zot_config(plex)["extensions"]["sync"]["registries"]
    assert reg["tlsVerify"] is False


def test_destination_of_host_port_names() -> None:
    plex = load_case("http")
    assert destination(plex, "docker.io") == "docker.io"
    assert destination(plex, "lab.internal:5000") == "lab.internal-5000"
    with pytest.raises(ConfigError, match=r"registry.upstreams\[0\].name"):
        destination(plex, "Bad Name!")


def test_upstream_host_and_image() -> None:
    assert upstream_host("http://10.0.0.2:5000/x") == "10.0.0.2:5000"
    assert upstream_host("https://registry-1.docker.io") == "registry-1.docker.io"
    assert image(load_case("one")) == "ghcr.io/project-zot/zot-linux-amd64:v2.1.20"


# --- CLI --------------------------------------------------------------------------------------


def test_cli_prints_the_zot_config(capsys: pytest.CaptureFixture[str]) -> None:
    from plex.__main__ import main

    path = GOLDEN / "cases" / "four.yaml"
    assert main(["registry", "config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == zot_config(load_plex(path))


def test_cli_refuses_upstream_for_zot(capsys: pytest.CaptureFixture[str]) -> None:
    from plex.__main__ import main

    assert main(["registry", "config", str(GOLDEN / "cases" / "four.yaml"), "-u", "quay.io"]) == 2
    assert "--upstream is for the distribution engine" in capsys.readouterr().err
