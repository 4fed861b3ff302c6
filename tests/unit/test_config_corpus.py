"""The malformed-plex corpus: every file fails `plex validate` with exactly its expected line.

Each tests/unit/malformed/*.yaml starts with `# expect: FILE:<line>: <path>: <message>` (FILE is
the path given on the command line); a file that cannot hold a comment (the empty file) has the
line in a `<name>.yaml.expect` sidecar.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from plex.errors import ConfigErrors
from plex.plexfile.load import parse_plex

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

PLEXES = Path(__file__).resolve().parents[2] / "plexes"

CORPUS = Path(__file__).parent / "malformed"
FILES = sorted(CORPUS.glob("*.yaml"))


def expected_line(path: Path) -> str:
    sidecar = path.with_name(path.name + ".expect")
    if sidecar.exists():
        return sidecar.read_text().strip()
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_and_every_expectation_names_a_line() -> None:
    assert len(FILES) >= 40
    for f in FILES:
        assert re.fullmatch(r"FILE:\d+: \S.*", expected_line(f)), f.name


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_validate_prints_exactly_the_expected_error(path: Path, cli: Cli) -> None:
    result = cli("validate", str(path))
    assert result.code == 2
    assert result.err_lines == ["error: " + expected_line(path).replace("FILE", str(path), 1)]
    assert result.out == ""


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_parse_plex_raises_one_config_error(path: Path) -> None:
    with pytest.raises(ConfigErrors) as exc:
        parse_plex(path.read_text(), "F")
    assert [e.message for e in exc.value.errors] == [expected_line(path).replace("FILE", "F", 1)]


def test_validate_reports_every_file_and_every_problem(cli: Cli, tmp_path: Path) -> None:
    """Several files at once: every error, in order; a good file hides none of them."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: Bad\n"
        "incus: {project: p}\n"
        "network: {cidr: 10.0.0.0/24}\n"
        "roles:\n"
        "  server: {count: x, offset: 21}\n"
    )
    a, b = CORPUS / "unknown-cni.yaml", CORPUS / "bad-dns-server.yaml"
    result = cli("validate", str(PLEXES / "demo.yaml"), str(bad), str(a), str(b))
    assert result.code == 2
    errors = [line for line in result.err_lines if line.startswith("error: ")]
    assert errors == [
        f"error: {bad}:1: name: 'Bad' must be lowercase letters, digits and '-', start with a "
        "letter, at most 40 characters (node names append '-<role><n>')",
        f"error: {bad}:5: roles.server.count: input should be a valid integer, unable to parse "
        "string as an integer (got string 'x')",
        "error: " + expected_line(a).replace("FILE", str(a)),
        "error: " + expected_line(b).replace("FILE", str(b)),
    ]


def _demo_with_servers(tmp_path: Path, count: int) -> Path:
    data = yaml.safe_load((PLEXES / "demo.yaml").read_text())
    data["roles"]["server"]["count"] = count
    path = tmp_path / f"demo{count}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("count", "warning"),
    [
        (
            2,
            "2 servers tolerate no more failures than 1 and add a second way to lose etcd "
            "quorum; use 1 or 3",
        ),
        (4, "4 servers tolerate no more failures than 3; use an odd number"),
    ],
)
def test_even_server_count_is_a_warning_not_a_failure(
    cli: Cli, tmp_path: Path, count: int, warning: str
) -> None:
    path = _demo_with_servers(tmp_path, count)
    result = cli("validate", str(path))
    assert result.code == 0
    assert result.err_lines[0] == f"warning: {path}: roles.server.count: {warning}"
    assert result.err_lines[1] == f"✓ {path}: plex 'demo', {5 + count} nodes"
    assert len(result.err_lines) == 2


@pytest.mark.parametrize("count", [1, 3, 5])
def test_odd_server_count_has_no_warning(cli: Cli, tmp_path: Path, count: int) -> None:
    result = cli("validate", str(_demo_with_servers(tmp_path, count)))
    assert result.code == 0
    assert not any("warning" in line for line in result.err_lines)
