"""`plex validate` checks the data files bake and deploy read for a plex (role recipes, base
images, probes, role profiles) as they load them: a broken one is one line naming its
file:line and field, exit 2. Each case breaks one real shipped file in a copy of the project."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for d in ("bake", "deploy", "images", "plexes"):
        shutil.copytree(REPO / d, tmp_path / d)
    monkeypatch.setenv("PLEX_HOME", str(tmp_path))
    return tmp_path


def edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text, f"{file.name} no longer holds {old!r}"
    file.write_text(text.replace(old, new, 1))


def line_of(file: Path, text: str) -> int:
    return next(i for i, line in enumerate(file.read_text().splitlines(), 1) if text in line)


def test_the_shipped_files_pass(project: Path, cli: Cli) -> None:
    result = cli("validate", *(str(p) for p in sorted((project / "plexes").glob("*.yaml"))))
    assert result.code == 0, result.err


def check(cli: Cli, project: Path, expected: str) -> None:
    result = cli("validate", str(project / "plexes" / "demo.yaml"))
    assert result.code == 2
    assert result.err_lines == [f"error: {expected}"]


def test_recipe_unknown_key(project: Path, cli: Cli) -> None:
    f = project / "bake" / "lb.yaml"
    edit(f, "template: keepalived.conf.j2,", "template: keepalived.conf.j2, owner: root,")
    n = line_of(f, "owner: root")
    check(cli, project, f"{f}:{n}: files[2].owner: unknown key")


def test_recipe_unquoted_mode(project: Path, cli: Cli) -> None:
    f = project / "bake" / "server.yaml"
    edit(f, 'mode: "0600"', "mode: 0600")  # YAML 1.1: the number 384
    n = line_of(f, "mode: 0600")
    check(cli, project, f'{f}:{n}: files[0].mode: 384 is not a quoted octal mode like "0644"')


def test_recipe_missing_template(project: Path, cli: Cli) -> None:
    f = project / "bake" / "common.yaml"
    edit(f, "template: hosts.j2", "template: hostz.j2")
    n = line_of(f, "hostz.j2")
    check(
        cli, project, f"{f}:{n}: files[0].template: no template {project}/bake/templates/hostz.j2"
    )


def test_recipe_key_given_twice(project: Path, cli: Cli) -> None:
    f = project / "bake" / "agent.yaml"
    edit(f, "role: agent\n", "role: agent\nrole: server\n")
    check(cli, project, f"{f}:3: role: key given twice (first on line 2)")


def test_base_image_bad_family(project: Path, cli: Cli) -> None:
    f = project / "images" / "debian-bookworm.yaml"
    edit(f, "family: debian", "family: ubuntu")
    n = line_of(f, "family: ubuntu")
    check(cli, project, f"{f}:{n}: family: input should be 'debian', 'suse' or 'alpine'")


def test_base_image_missing_what_its_kind_needs(project: Path, cli: Cli) -> None:
    f = project / "images" / "debian-bookworm.yaml"
    edit(f, "suite: bookworm\n", "")
    check(cli, project, f"{f}: suite: required for a mmdebstrap base")


def test_probe_unknown_variable(project: Path, cli: Cli) -> None:
    f = project / "deploy" / "probes.yaml"
    edit(f, 'expect: "^{ed25519}$"', 'expect: "^{ed2559}$"')
    n = line_of(f, "{ed2559}")
    check(
        cli,
        project,
        f"{f}:{n}: common[1].expect: unknown variable {{ed2559}} (known: address, api, "
        "curl_tls, ed25519, kubeconfig, kubectl, node, port, rsa, upstream, upstream_url, vip)",
    )


def test_probe_bad_regex_and_bad_role(project: Path, cli: Cli) -> None:
    f = project / "deploy" / "probes.yaml"
    edit(f, 'expect: "^running$"', 'expect: "^(running$"')
    edit(f, "roles:\n  lb:\n", "roles:\n  lbs:\n")
    n, m = line_of(f, "^(running$"), line_of(f, "  lbs:")
    result = cli("validate", str(project / "plexes" / "demo.yaml"))
    assert result.code == 2
    assert result.err_lines == [
        f"error: {f}:{n}: common[0].expect: not a regular expression: missing ), unterminated "
        "subpattern at position 1",
        f"error: {f}:{m}: roles.lbs: 'lbs' is not one of 'registry', 'lb', 'server' or 'agent'",
    ]


def test_profile_device_not_a_mapping(project: Path, cli: Cli) -> None:
    f = project / "deploy" / "profiles" / "agent.yaml"
    edit(
        f,
        "    kmsg:\n      type: unix-char\n      source: /dev/kmsg\n      path: /dev/kmsg\n",
        "    kmsg: /dev/kmsg\n",
    )
    n = line_of(f, "kmsg: /dev/kmsg")
    check(cli, project, f"{f}:{n}: container.devices.kmsg: must be a mapping, not string")
