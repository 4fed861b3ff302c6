"""The package's layering as tests can see it: lazy imports only where start-up time needs them.

The direction of imports and the absence of cycles are import-linter's contracts (`make lint`);
these tests cover what it cannot: where an import sits, and what a command really loads.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plex"

# A function-level import is allowed only in the CLI (and the entry point), and only of the
# layers a command needs once it runs: keeping them out of `plex --help` is the point.
LAZY_ALLOWED_IN = ("cli", "__main__.py")
LAZY_ALLOWED_OF = (
    "plex.services",
    "plex.backends",
    "plex.store",
    "plex.cli",
    # The pydantic models and what builds on them: `plex --help` builds none of them.
    "plex.model",
    "plex.plexfile",
    "plex.deploy",
    "plex.registry",
)

# Heavy libraries only commands that talk to a daemon need.
NOT_AT_START = ("pylxd", "docker", "requests", "zstandard")
# What `plex --help` has no use for: the models (pydantic), YAML, templates, rich, the version,
# age encryption (pyrage), the observed-state snapshot.
NOT_FOR_HELP = (
    "pydantic",
    "yaml",
    "jinja2",
    "rich",
    "importlib.metadata",
    "pyrage",
    "plex.model.observed",
)
# `plex validate` renders no template and prints one line a file (typer's own click writes it:
# the separately installed click package is not loaded either).
NOT_FOR_VALIDATE = ("jinja2", "rich", "click")


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(node.lineno, n) for n in names if n == "plex" or n.startswith("plex.")]
    return found


def test_function_level_imports_only_keep_the_cli_start_fast() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        in_cli = rel.parts[0] in LAZY_ALLOWED_IN
        for line, module in _function_level_imports(path):
            if not in_cli or not module.startswith(LAZY_ALLOWED_OF):
                offenders.append(f"plex/{rel}:{line}: {module}")
    assert offenders == [], "function-level imports (import at the top instead):\n" + "\n".join(
        offenders
    )


def test_the_scan_sees_a_function_level_import(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from plex.model import owner\n    return owner\n")
    assert _function_level_imports(mod) == [(2, "plex.model")]


def _loaded_by(*argv: str, full: bool = False) -> set[str]:
    """The top-level modules (every module: `full`) a whole `plex ARGV` process has imported
    when it finishes."""
    names = "sys.modules" if full else "{m.split('.')[0] for m in sys.modules}"
    code = (
        "import json, sys\n"
        "from plex.__main__ import main\n"
        f"rc = main({list(argv)!r})\n"
        f"print(json.dumps(sorted({names})))\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [("--help",), ("validate", "plexes/demo.yaml")])
def test_cli_start_does_not_import_daemon_clients(argv: tuple[str, ...]) -> None:
    loaded = _loaded_by(*argv)
    assert "plex" in loaded  # the probe itself works
    assert sorted(loaded & set(NOT_AT_START)) == []


def test_help_builds_no_model() -> None:
    loaded = _loaded_by("--help", full=True)
    assert "plex.cli.commands.deploy" in loaded  # every command was registered
    assert sorted(m for m in loaded if m in NOT_FOR_HELP or m.startswith("plex.model.plex")) == []


def test_validate_renders_nothing_and_prints_without_rich() -> None:
    loaded = _loaded_by("validate", "plexes/demo.yaml")
    assert "pydantic" in loaded  # it did validate
    assert sorted(loaded & set(NOT_FOR_VALIDATE)) == []


def test_a_daemon_command_does_import_pylxd() -> None:
    # The other side of the test above: the probe sees pylxd when a command needs it.
    code = "import sys; import plex.backends.incus.client; print('pylxd' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
