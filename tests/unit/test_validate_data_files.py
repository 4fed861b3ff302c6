"""`plex validate` checks the data files bake and deploy read for a plex (role recipes, base
images, probes, role profiles) as they load them: a broken one is one line naming its
file:line and field, exit 2. Each case breaks one real shipped file in a copy of the project."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

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


# (file, text replaced, replacement, text marking the line, the error: {f} file, {n} line)
CASES = {
    "recipe-unknown-key": (
        "bake/lb.yaml",
        "template: keepalived.conf.j2,",
        "template: keepalived.conf.j2, owner: root,",
        "owner: root",
        "{f}:{n}: files[2].owner: unknown key",
    ),
    "recipe-unquoted-mode": (  # YAML 1.1 reads 0600 as the number 384
        "bake/server.yaml",
        'mode: "0600"',
        "mode: 0600",
        "mode: 0600",
        '{f}:{n}: files[0].mode: 384 is not a quoted octal mode like "0644"',
    ),
    "recipe-missing-template": (
        "bake/common.yaml",
        "template: hosts.j2",
        "template: hostz.j2",
        "hostz.j2",
        "{f}:{n}: files[0].template: no template {root}/bake/templates/hostz.j2",
    ),
    "recipe-key-given-twice": (
        "bake/agent.yaml",
        "role: agent\n",
        "role: agent\nrole: server\n",
        "role: server",
        "{f}:{n}: role: key given twice (first on line 2)",
    ),
    "base-bad-family": (
        "images/debian-bookworm.yaml",
        "family: debian",
        "family: ubuntu",
        "family: ubuntu",
        "{f}:{n}: family: input should be 'debian', 'suse' or 'alpine'",
    ),
    "base-missing-what-its-kind-needs": (
        "images/debian-bookworm.yaml",
        "suite: bookworm\n",
        "",
        None,
        "{f}: suite: required for a mmdebstrap base",
    ),
    "probe-unknown-variable": (
        "deploy/probes.yaml",
        'expect: "^{ed25519}$"',
        'expect: "^{ed2559}$"',
        "{ed2559}",
        "{f}:{n}: common[1].expect: unknown variable {{ed2559}} (known: address, api, "
        "curl_tls, ed25519, kubeconfig, kubectl, node, port, rsa, upstream, upstream_url, vip)",
    ),
    "profile-device-not-a-mapping": (
        "deploy/profiles/agent.yaml",
        "    kmsg:\n      type: unix-char\n      source: /dev/kmsg\n      path: /dev/kmsg\n",
        "    kmsg: /dev/kmsg\n",
        "kmsg: /dev/kmsg",
        "{f}:{n}: container.devices.kmsg: must be a mapping, not string",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_data_file_is_one_line(case: str, project: Path, cli: Cli) -> None:
    name, old, new, marker, expected = CASES[case]
    f = project / name
    edit(f, old, new)
    n = line_of(f, marker) if marker else None
    result = cli("validate", str(project / "plexes" / "demo.yaml"))
    assert result.code == 2
    assert result.err_lines == ["error: " + expected.format(f=f, n=n, root=project)]


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


def test_each_data_file_given_on_its_own_is_checked_as_what_it_is(project: Path, cli: Cli) -> None:
    files = [
        *sorted((project / "bake").glob("*.yaml")),
        *sorted((project / "images").glob("*.yaml")),
        project / "deploy" / "probes.yaml",
        *sorted((project / "deploy" / "profiles").glob("*.yaml")),
    ]
    result = cli("validate", *(str(f) for f in files))
    assert result.code == 0, result.err
    assert f"✓ {project / 'deploy' / 'probes.yaml'}: probes" in result.err
    assert f"✓ {project / 'images' / 'opensuse-microos.yaml'}: base image" in result.err
    f = project / "deploy" / "profiles" / "lb.yaml"
    edit(f, "devices: {}", "devices: []")
    result = cli("validate", str(f))
    assert result.code == 2
    assert result.err_lines == [
        f"error: {f}:{line_of(f, 'devices: []')}: devices: " + ("must be a mapping, not list")
    ]
