"""What nodes resolve and trust comes from the plex: resolv.conf from network.dns, extra CAs
from tls.ca_files (validated with file:line, baked into trust stores and containerd's config)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.bake.context import template_context
from plex.bake.recipe import load_role_recipe, render_files
from plex.bake.render import Renderer
from plex.errors import ConfigErrors
from plex.model.identity import Identity, compute_identity
from plex.model.plex import Engine, Plex, Role
from plex.plexfile.load import load_plex, parse_plex
from plex.plexfile.trust import BUNDLE, TRUST_DIR, check_ca_files
from plex.registry.mirrors import registries_yaml
from tests.fixtures.rke2_rules import rke2_hosts_toml
from tests.fixtures.test_ca import make_test_ca

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

REPO = Path(__file__).resolve().parents[2]
PLEXES = REPO / "plexes"
BAKE = REPO / "bake"


def _identity(plex: Plex) -> Identity:
    from tests.unit.test_packer_template import FixedKeyGen

    return compute_identity(plex, None, FixedKeyGen())


def _files(plex: Plex, role: Role) -> dict[str, str]:
    rr = load_role_recipe(BAKE, role, plex.registry.engine)
    ctx = template_context(plex, _identity(plex), role)
    return {
        f.path: f.content.decode()
        for f in render_files(rr, Renderer(BAKE / "templates"), {**ctx, "package_digest": "x"})
    }


def _demo(**network: object) -> Plex:
    data = yaml.safe_load((PLEXES / "demo.yaml").read_text())
    data["network"].update(network)
    return parse_plex(yaml.safe_dump(data), "demo.yaml")


def _nameservers(text: str) -> list[str]:
    return [ln.split()[1] for ln in text.splitlines() if ln.startswith("nameserver ")]


@pytest.mark.parametrize("role", list(Role))
def test_every_role_image_gets_resolv_conf_from_the_plex(role: Role) -> None:
    plex = _demo()  # dhcp addressing, as shipped
    text = _files(plex, role)["/etc/resolv.conf"]
    assert _nameservers(text) == ["10.77.0.1"]
    assert "search demo.plex.internal" in text


def test_static_addressing_uses_the_same_resolvers() -> None:
    plex = _demo(addressing="static", dns=["10.77.0.1", "10.77.0.2"])
    files = _files(plex, Role.SERVER)
    assert _nameservers(files["/etc/resolv.conf"]) == ["10.77.0.1", "10.77.0.2"]


def test_no_dns_falls_back_to_the_gateway_never_the_build_host() -> None:
    plex = _demo(dns=[])
    text = _files(plex, Role.LB)["/etc/resolv.conf"]
    assert _nameservers(text) == ["10.77.0.1"]
    host = Path("/etc/resolv.conf")
    if host.exists():
        assert text != host.read_text()


# --- tls.ca_files -------------------------------------------------------------------------


def _plex_file(tmp_path: Path, ca_files: list[str]) -> Path:
    data = yaml.safe_load((PLEXES / "demo.yaml").read_text())
    data["tls"] = {"ca_files": ca_files}
    f = tmp_path / "demo.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


def test_validate_names_file_line_and_field_of_a_missing_ca(tmp_path: Path, cli: Cli) -> None:
    f = _plex_file(tmp_path, ["certs/missing.crt"])
    line = next(i for i, ln in enumerate(f.read_text().splitlines(), 1) if "missing.crt" in ln)
    res = cli("validate", str(f))
    assert res.code == 2
    assert res.err_lines == [
        f"error: {f}:{line}: tls.ca_files[0]: {tmp_path}/certs/missing.crt: no such file"
    ]


def test_a_non_pem_ca_file_is_refused(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "ca.crt").write_text("this is not a certificate\n")
    f = _plex_file(tmp_path, ["ca.crt"])
    res = cli("validate", str(f))
    assert res.code == 2
    assert len(res.err_lines) == 1
    assert "tls.ca_files[0]" in res.err_lines[0]
    assert "not a PEM certificate" in res.err_lines[0]
    assert res.err_lines[0].startswith(f"error: {f}:")


def test_a_broken_pem_block_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ConfigErrors) as e:
        load_plex(_plex_file(tmp_path, ["ca.crt"]))
    assert "not a valid PEM certificate" in str(e.value)


def test_a_test_ca_is_baked_into_trust_store_and_containerd(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path / "ca")
    plex = load_plex(_plex_file(tmp_path, [str(ca.cert)]))
    assert check_ca_files(plex) == []
    pem = ca.cert.read_text()
    for role in (Role.REGISTRY, Role.SERVER, Role.AGENT):
        files = _files(plex, role)
        assert files[f"{TRUST_DIR}/00-plex-test-ca.crt"] == pem, role
        assert files[BUNDLE] == pem, role
    # The upstream fallback from the nodes trusts it too (k3s registries.yaml configs).
    doc = registries_yaml(plex)
    assert doc["configs"] == {"registry-1.docker.io": {"tls": {"ca_file": BUNDLE}}}
    # RKE2 (k3s rules) gives the default endpoint that CA (config keyed by registry-1.docker.io).
    toml = tomllib.loads(rke2_hosts_toml(doc)["docker.io"])
    assert toml["server"] == "https://registry-1.docker.io/v2"
    assert toml["ca"] == [BUNDLE]


def test_without_extra_cas_nothing_changes() -> None:
    plex = _demo()
    files = _files(plex, Role.SERVER)
    assert not any(p.startswith((TRUST_DIR, "/etc/plex/tls")) for p in files)
    assert "configs" not in registries_yaml(plex)
    assert "ca" not in tomllib.loads(rke2_hosts_toml(registries_yaml(plex))["docker.io"])
    assert plex.registry.engine is Engine.DISTRIBUTION
