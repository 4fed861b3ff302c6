"""The CLI's foundation commands (validate, show, schema) and --help on every registered command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import typer
import yaml

from plex.cli import app, app_for, ui

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "plexes").glob("*.yaml"))
CORPUS = Path(__file__).parent / "malformed"


def test_validate_the_shipped_plexes(cli: Cli) -> None:
    result = cli("validate", *map(str, SHIPPED))
    assert result.code == 0
    assert result.err_lines == [
        f"✓ {SHIPPED[0]}: plex 'demo', 8 nodes",
        f"✓ {SHIPPED[1]}: plex 'omniplex', 12 nodes",
        f"✓ {SHIPPED[2]}: plex 'verniplex', 9 nodes",
    ]


def test_one_line_messages_read_the_same_with_rich_and_without(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ok/warn/error are written by typer's click until rich's console exists, then through it.
    monkeypatch.delenv("FORCE_COLOR", raising=False)

    def lines() -> str:
        ui.ok("plexes/[x].yaml: fine")
        ui.warn("careful [/x]")
        ui.error("bad [red]", "try [y]")
        return capsys.readouterr().err

    ui._console.cache_clear()
    without_rich = lines()
    ui._console(True)
    with_rich = lines()
    assert with_rich == without_rich
    assert without_rich.splitlines() == [
        "✓ plexes/[x].yaml: fine",
        "warning: careful [/x]",
        "error: bad [red]",
        "  hint: try [y]",
    ]


def test_validate_a_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert result.err_lines == [f"error: {tmp_path / 'nope.yaml'}: no such plex file"]


def test_show_json(cli: Cli, plex_home: Path) -> None:
    result = cli("show", "demo", "-o", "json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["plex"] == "demo"
    assert data["project"] == "plex-demo"
    assert data["network"] == {
        "cidr": "10.77.0.0/24",
        "vip": "10.77.0.10",
        "domain": "demo.plex.internal",
    }
    assert len(data["nodes"]) == 8
    assert [n["name"] for n in data["nodes"] if n["master"]] == ["demo-server1"]
    assert data["nodes"][0] == {
        "name": "demo-registry1",
        "role": "registry",
        "master": False,
        "address": "10.77.0.5",
        "member": None,
        "virt": "container",
        "base": "debian-bookworm",
        "image": "demo/registry",
    }


def test_show_by_path_and_as_table(cli: Cli) -> None:
    result = cli("show", str(REPO / "plexes" / "omniplex.yaml"))
    assert result.code == 0
    # Piped (captured) output: whole names, not cut to an assumed 80 columns.
    assert "omniplex-server1 (master)" in result.out
    assert "omniplex-registry1" in result.out
    assert "omniplex/registry" in result.out


def test_show_rejects_an_unknown_format(cli: Cli, plex_home: Path) -> None:
    result = cli("show", "demo", "-o", "yaml")
    assert result.code == 2
    assert result.err_lines == [
        "error: Invalid value for '--output' / '-o': 'yaml' is not one of 'table', 'json'.",
        "  hint: see 'plex show --help'",
    ]


def test_show_an_unknown_plex_lists_the_known_ones(cli: Cli, plex_home: Path) -> None:
    result = cli("show", "nosuch")
    assert result.code == 2
    assert result.err_lines == [
        f"error: no plex named 'nosuch' in {plex_home / 'plexes'}",
        "  hint: known plexes: demo, omniplex, verniplex",
    ]


# --- schema


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    from plex.plexfile.load import json_schema

    return json_schema()


def test_schema_command_prints_a_valid_json_schema(cli: Cli) -> None:
    result = cli("schema")
    assert result.code == 0
    printed = json.loads(result.out)
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "source" not in printed["properties"]
    assert set(printed["required"]) == {"name", "incus", "network", "roles"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_plexes_satisfy_the_schema(schema: dict[str, object], path: Path) -> None:
    jsonschema.validate(
        yaml.safe_load(path.read_text()), schema, cls=jsonschema.Draft202012Validator
    )


@pytest.mark.parametrize(
    "name",
    [
        "unknown-top-level-key",
        "unknown-role-key",
        "unknown-cni",
        "unknown-virt",
        "count-not-int",
        "bad-memory-size",
        "missing-server-role",
        "incus-is-list",
    ],
)
def test_schema_rejects_what_the_loader_rejects(schema: dict[str, object], name: str) -> None:
    """The schema has teeth: shape errors from the corpus fail schema validation too."""
    data = yaml.safe_load((CORPUS / f"{name}.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


# --- --help everywhere


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command under a (typer-built) click group, sub-groups included."""
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name)
        if getattr(cmd, "commands", None):
            yield from command_paths(cmd, (*prefix, name))


COMMANDS = list(command_paths(typer.main.get_command(app)))


def test_every_registered_command_is_covered() -> None:
    registered = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    registered |= {g.name for g in app.registered_groups if g.name}
    assert registered
    assert registered <= {p[0] for p in COMMANDS}
    assert {"validate", "show", "schema", "identity"} <= registered


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=["plex", *(" ".join(p) for p in COMMANDS)])
def test_help(cli: Cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.code == 0, result.err
    assert "Usage:" in result.out
    assert " ".join(("plex", *path)) in " ".join(result.out.split())


def test_a_command_run_builds_only_itself() -> None:
    # typer reads every registered function's signature before parsing: a command run gets
    # an app holding just that command (or group); help and unknown names get the whole app.
    only = app_for(["validate", "plexes/demo.yaml"])
    assert [c.name for c in only.registered_commands] == ["validate"]
    assert only.registered_groups == []
    group = app_for(["registry", "up", "demo"])
    assert ([g.name for g in group.registered_groups], group.registered_commands) == (
        ["registry"],
        [],
    )
    for argv in ([], ["--help"], ["--version"], ["valdate"], ["-h", "validate"]):
        assert app_for(argv) is app
    assert app.registered_commands and len(app.registered_commands) > 1  # the app is untouched


def test_short_help_option(cli: Cli) -> None:
    assert cli("validate", "-h").code == 0


def test_unknown_command_is_a_usage_error(cli: Cli) -> None:
    result = cli("frobnicate")
    assert result.code == 2
    assert "No such command" in result.err
