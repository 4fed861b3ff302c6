"""Zot config rendering: golden files, documented key names, credentials file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plex.errors import ConfigError
from plex.model.plex import Engine, Plex, Upstream
from plex.plexfile.load import load_plex
from plex.registry.credentials import parse_credentials
from plex.registry.engines import engine_files
from plex.registry.zot import (
    CREDENTIALS_PATH,
    destination,
    image,
    upstream_host,
    zot_config,
    zot_credentials,
    zot_files,
)

ROOT = Path(__file__).resolve().parents[2]
from registry_golden import CASES, GOLDEN, bundle, case_credentials, check_golden, golden_case  # noqa: E402

KEYS_FILE = ROOT / "deploy" / "registry" / "zot-keys.txt"


def load_case(name: str, engine: Engine = Engine.ZOT) -> Plex:
    return golden_case(name, engine)



@pytest.mark.parametrize("case", CASES)
def test_golden_zot_files(case: str) -> None:
    check_golden(f"{case}-zot.txt", bundle(engine_files(load_case(case))))


def test_golden_zot_files_with_credentials() -> None:
    files = engine_files(load_case("four"), case_credentials())
    check_golden("four-zot-credentials.txt", bundle(files))


# --- documented keys --------------------------------------------------------------------------


def documented_keys() -> set[str]:
    keys = set()
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            keys.add(line.split()[0])
    return keys


def key_paths(doc: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document: `a.b`, list elements as `a[]`."""
    out: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            out |= key_paths(v, p)
    elif isinstance(doc, list):
        for v in doc:
            out.add(f"{prefix}[]")
            out |= key_paths(v, f"{prefix}[]")
    return out


def test_key_paths_helper() -> None:
    assert key_paths({"a": {"b": [{"c": 1}, 2]}}) == {"a", "a.b", "a.b[]", "a.b[].c"}


def test_keys_file_has_sources() -> None:
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert len(line.split()) >= 2, f"no source noted for: {line}"
            assert "[" in line.split(maxsplit=1)[1], f"no [SOURCE] for: {line}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("creds_path", [CREDENTIALS_PATH, None])
def test_every_rendered_key_is_documented(case: str, creds_path: str | None) -> None:
    rendered = key_paths(zot_config(load_case(case), creds_path))
    unknown = rendered - documented_keys()
    assert not unknown, f"keys not in {KEYS_FILE.name}: {sorted(unknown)}"


def test_an_undocumented_key_would_be_caught() -> None:
    doc = zot_config(load_case("one"))
    doc["extensions"]["sync"]["registries"][0]["ondemand"] = True  # wrong case
    assert key_paths(doc) - documented_keys() == {"extensions.sync.registries[].ondemand"}


# --- content ----------------------------------------------------------------------------------


def test_pull_through_settings() -> None:
    cfg = zot_config(load_case("four"))
    assert cfg["http"] == {"address": "0.0.0.0", "port": "5000", "compat": ["docker2s2"]}
    assert cfg["storage"]["rootDirectory"] == "/var/lib/registry"
    regs = cfg["extensions"]["sync"]["registries"]
    assert [r["urls"] for r in regs] == [
        ["https://registry-1.docker.io"], ["https://ghcr.io"], ["https://quay.io"],
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
    plex = plex.model_copy(update={"registry": plex.registry.model_copy(update={"upstreams": (
        Upstream(name="harbor.lab", url="https://harbor.lab", tls_verify=False),)})})
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
    assert image(load_case("one")) == "ghcr.io/project-zot/zot-linux-amd64:v2.1.2"


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
