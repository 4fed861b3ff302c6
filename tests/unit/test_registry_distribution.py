"""Debian docker-registry (Distribution) proxies: one per upstream, each on its own port."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plex.errors import ConfigError, UsageError
from plex.model.plex import Engine, Plex, Upstream
from plex.plexfile.load import load_plex
from plex.registry.distribution import (
    distribution_files,
    distribution_proxies,
    port_of,
    unit_text,
)
from plex.registry.engines import engine_files
from tests.unit import registry_golden as golden


def load_case(name: str, engine: Engine = Engine.DISTRIBUTION) -> Plex:
    return golden.golden_case(name, engine)


def with_upstreams(plex: Plex, *ups: Upstream) -> Plex:
    return plex.model_copy(update={"registry": plex.registry.model_copy(update={"upstreams": ups})})


@pytest.mark.parametrize("case", golden.CASES)
def test_golden_distribution_files(case: str) -> None:
    golden.check_golden(f"{case}-distribution.txt", golden.bundle(engine_files(load_case(case))))


def test_golden_distribution_files_with_credentials() -> None:
    files = engine_files(load_case("four"), golden.case_credentials())
    golden.check_golden("four-distribution-credentials.txt", golden.bundle(files))


def test_one_proxy_per_upstream_on_consecutive_ports() -> None:
    proxies = distribution_proxies(load_case("four"))
    assert [(p.upstream.name, p.port, p.unit_name) for p in proxies] == [
        ("docker.io", 5000, "plex-registry@docker.io.service"),
        ("ghcr.io", 5001, "plex-registry@ghcr.io.service"),
        ("quay.io", 5002, "plex-registry@quay.io.service"),
        ("registry.k8s.io", 5003, "plex-registry@registry.k8s.io.service"),
    ]
    for p in proxies:
        assert p.config["http"]["addr"] == f":{p.port}"
        assert p.config["storage"]["filesystem"]["rootdirectory"] == (
            f"/var/lib/docker-registry/{p.upstream.name}"
        )
        assert p.config["proxy"]["remoteurl"] == p.upstream.url
        assert p.config_path == f"/etc/docker/registry/{p.upstream.name}.yml"
    assert port_of(load_case("four"), "quay.io") == 5002


def test_port_of_unknown_upstream() -> None:
    with pytest.raises(UsageError, match=r"no registry upstream 'gcr\.io'"):
        port_of(load_case("four"), "gcr.io")


def test_login_only_where_given() -> None:
    proxies = {
        p.upstream.name: p
        for p in distribution_proxies(load_case("four"), golden.case_credentials())
    }
    assert proxies["docker.io"].config["proxy"]["username"] == "plexbot"
    assert proxies["docker.io"].config["proxy"]["password"] == "FAKE-golden-docker-0001"
    assert "username" not in proxies["ghcr.io"].config["proxy"]
    assert "password" not in proxies["ghcr.io"].config["proxy"]
    assert [n for n, p in proxies.items() if p.has_secrets] == ["docker.io", "quay.io"]
    for p in proxies.values():
        assert "FAKE" not in repr(p) and "FAKE" not in str(p) and "FAKE" not in f"{p}"


def test_no_login_without_credentials() -> None:
    for p in distribution_proxies(load_case("four")):
        assert set(p.config["proxy"]) == {"remoteurl", "ttl"}
        assert not p.has_secrets


def test_secret_configs_are_readable_by_the_service_only() -> None:
    files = {f.path: f for f in distribution_files(load_case("four"), golden.case_credentials())}
    docker = files["/etc/docker/registry/docker.io.yml"]
    assert (docker.secret, docker.mode, docker.owner, docker.group) == (
        True,
        0o640,
        "root",
        "docker-registry",
    )
    ghcr = files["/etc/docker/registry/ghcr.io.yml"]
    assert (ghcr.secret, ghcr.mode) == (False, 0o644)
    assert "FAKE" not in repr(docker)


def test_configs_are_valid_yaml_round_trips() -> None:
    for f in distribution_files(load_case("four"), golden.case_credentials())[1:]:
        doc = yaml.safe_load(f.content)
        assert doc["version"] == 0.1
        assert doc["proxy"]["ttl"] == "168h"


def test_https_upstream_without_tls_verification_is_refused() -> None:
    plex = with_upstreams(
        load_case("one"),
        Upstream(name="docker.io", url="https://registry-1.docker.io"),
        Upstream(name="harbor.lab", url="https://harbor.lab", tls_verify=False),
    )
    with pytest.raises(ConfigError, match=r"registry.upstreams\[1\].tls_verify") as e:
        distribution_proxies(plex)
    assert e.value.hint is not None and "zot" in e.value.hint


def test_http_upstream_needs_no_tls() -> None:
    (_, lab) = distribution_proxies(load_case("http"))
    assert lab.config["proxy"]["remoteurl"] == "http://10.99.0.2:5000"
    assert lab.port == 5051
    assert lab.unit_name == "plex-registry@lab.internal:5000.service"


def test_unit_name_characters() -> None:
    plex = with_upstreams(load_case("one"), Upstream(name="a/b", url="https://x.io"))
    with pytest.raises(ConfigError, match="systemd unit instance"):
        distribution_proxies(plex)


def test_ports_must_fit() -> None:
    plex = load_case("four")
    plex = plex.model_copy(update={"registry": plex.registry.model_copy(update={"port": 65534})})
    with pytest.raises(ConfigError, match="port 65536"):
        distribution_proxies(plex)


def test_unit_template() -> None:
    text = unit_text()
    assert "ExecStart=/usr/bin/docker-registry serve /etc/docker/registry/%i.yml" in text
    assert "User=docker-registry" in text
    assert "Restart=always" in text
    assert "StateDirectory=docker-registry/%i" in text
    sections = [line for line in text.splitlines() if line.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]


def test_cli_prints_one_config_per_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from plex.__main__ import main

    text = (golden.GOLDEN / "cases" / "four.yaml").read_text()
    path = tmp_path / "four.yaml"
    path.write_text(text.replace("registry:\n", "registry:\n  engine: distribution\n", 1))
    assert main(["registry", "config", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == [p.unit_name for p in distribution_proxies(load_plex(path))]
    assert main(["registry", "config", str(path), "--upstream", "ghcr.io"]) == 0
    assert json.loads(capsys.readouterr().out)["http"]["addr"] == ":5001"
