"""Node-side mirrors: RKE2 registries.yaml and containerd hosts.toml, for both engines."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from plex.errors import UsageError
from plex.model.plex import Engine, Plex, Upstream
from plex.registry.mirrors import mirror_url, node_files, registries_yaml
from tests.fixtures.rke2_rules import rke2_hosts_toml
from tests.unit.registry_golden import CASES, bundle, check_golden, golden_case

ENGINES = (Engine.ZOT, Engine.DISTRIBUTION)


load_case = golden_case


def with_upstreams(plex: Plex, *ups: Upstream) -> Plex:
    return plex.model_copy(update={"registry": plex.registry.model_copy(update={"upstreams": ups})})


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ENGINES)
def test_golden_node_files(case: str, engine: Engine) -> None:
    check_golden(f"{case}-{engine.value}-nodes.txt", bundle(node_files(load_case(case, engine))))


def test_zot_endpoints_carry_the_destination_path() -> None:
    doc = registries_yaml(load_case("four", Engine.ZOT))
    assert doc == {
        "mirrors": {
            name: {"endpoint": [f"http://10.20.0.5:5000/v2/{name}"]}
            for name in ("docker.io", "ghcr.io", "quay.io", "registry.k8s.io")
        }
    }


def test_distribution_endpoints_are_domain_roots_on_their_own_ports() -> None:
    doc = registries_yaml(load_case("four", Engine.DISTRIBUTION))
    assert doc == {
        "mirrors": {
            "docker.io": {"endpoint": ["http://10.20.0.5:5000"]},
            "ghcr.io": {"endpoint": ["http://10.20.0.5:5001"]},
            "quay.io": {"endpoint": ["http://10.20.0.5:5002"]},
            "registry.k8s.io": {"endpoint": ["http://10.20.0.5:5003"]},
        }
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_every_endpoint_is_explicit_http(engine: Engine) -> None:
    for case in CASES:
        for m in registries_yaml(load_case(case, engine))["mirrors"].values():
            assert m["endpoint"][0].startswith("http://")


def test_a_non_default_upstream_is_the_explicit_fallback() -> None:
    doc = registries_yaml(load_case("http", Engine.ZOT))
    assert doc["mirrors"]["lab.internal:5000"]["endpoint"] == [
        "http://10.99.0.5:5050/v2/lab.internal-5000",
        "http://10.99.0.2:5000",
    ]
    # docker.io's URL is containerd's own default: no second endpoint.
    assert doc["mirrors"]["docker.io"]["endpoint"] == ["http://10.99.0.5:5050/v2/docker.io"]
    assert "configs" not in doc  # tls_verify: false on http changes nothing


def test_insecure_https_upstream_fallback_skips_verification() -> None:
    plex = with_upstreams(
        load_case("one", Engine.ZOT),
        Upstream(name="harbor.lab", url="https://harbor.lab", tls_verify=False),
    )
    doc = registries_yaml(plex)
    assert doc["configs"] == {"harbor.lab": {"tls": {"insecure_skip_verify": True}}}
    # What RKE2 makes of it (k3s rules): the upstream, last in the list, is the default
    # endpoint, and it skips verification.
    hosts = tomllib.loads(rke2_hosts_toml(doc)["harbor.lab"])
    assert hosts["server"] == "https://harbor.lab/v2"
    assert hosts["skip_verify"] is True
    assert list(hosts["host"]) == [mirror_url(plex, "harbor.lab")]


def test_rke2_makes_zot_endpoints_override_the_path() -> None:
    """Zot's per-upstream path prefix works only because RKE2 turns an endpoint path other
    than /v2 into override_path = true (k3s normalizeEndpointAddress)."""
    texts = rke2_hosts_toml(registries_yaml(load_case("four", Engine.ZOT)))
    assert list(texts) == ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"]
    doc = tomllib.loads(texts["docker.io"])
    assert doc == {
        "server": "https://registry-1.docker.io/v2",
        "capabilities": ["pull", "resolve", "push"],
        "host": {
            "http://10.20.0.5:5000/v2/docker.io": {
                "capabilities": ["pull", "resolve"],
                "override_path": True,
            }
        },
    }


def test_rke2_gives_distribution_root_endpoints_no_override_path() -> None:
    doc = tomllib.loads(
        rke2_hosts_toml(registries_yaml(load_case("four", Engine.DISTRIBUTION)))["quay.io"]
    )
    assert doc["host"] == {"http://10.20.0.5:5002/v2": {"capabilities": ["pull", "resolve"]}}


def test_mirror_url() -> None:
    assert mirror_url(load_case("http", Engine.ZOT), "lab.internal:5000") == (
        "http://10.99.0.5:5050/v2/lab.internal-5000"
    )
    assert mirror_url(load_case("http", Engine.DISTRIBUTION), "lab.internal:5000") == (
        "http://10.99.0.5:5051"
    )
    with pytest.raises(UsageError, match="no registry upstream 'nope'"):
        mirror_url(load_case("one", Engine.ZOT), "nope")


def test_ipv6_registry_address_is_bracketed() -> None:
    plex = load_case("one", Engine.ZOT)
    plex = plex.model_copy(
        update={"network": plex.network.model_copy(update={"cidr": "fd00:77::/64"})}
    )
    assert mirror_url(plex, "docker.io") == "http://[fd00:77::5]:5000/v2/docker.io"
    assert (
        "http://[fd00:77::5]:5000/v2/docker.io"
        in tomllib.loads(rke2_hosts_toml(registries_yaml(plex))["docker.io"])["host"]
    )


def test_without_a_registry_node_nothing_is_mirrored() -> None:
    plex = load_case("one", Engine.ZOT)
    plex = plex.model_copy(update={"roles": plex.roles.model_copy(update={"registry": None})})
    assert registries_yaml(plex) == {}
    assert node_files(plex) == []
    with pytest.raises(UsageError, match="no registry node"):
        mirror_url(plex, "docker.io")


def test_node_files_paths_and_yaml() -> None:
    files = node_files(load_case("four", Engine.ZOT))
    # Only what RKE2 reads: it generates containerd's hosts files itself (and ignores
    # /etc/containerd/certs.d).
    assert [f.path for f in files] == ["/etc/rancher/rke2/registries.yaml"]
    assert not any(f.secret for f in files)
    assert yaml.safe_load(files[0].content) == registries_yaml(load_case("four", Engine.ZOT))
