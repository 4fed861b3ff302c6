"""One version: pyproject.toml's, as installed (importlib.metadata)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import plex
from plex.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_the_one_in_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert plex.__version__ == declared
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"plex {declared}\n"
