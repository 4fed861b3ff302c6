"""An installed wheel works outside a checkout: it ships bake/, deploy/ and images/ (setup.py)
and plex.plexfile.home finds them. Builds the wheel, installs it (no dependencies: they come
from this environment) into a fresh venv, and runs plex from a directory with no checkout.
The build is isolated, as a release build is: pip fetches the build-system requirements.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a wheel build: about a minute on a loaded machine

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{argv}: {out.stdout}{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a clean copy: no build/ or egg-info of the checkout leaks in
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "tests", "__pycache__"
        ),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", str(tmp / "dist"), "."], src)
    (wheel,) = (tmp / "dist").glob("plex-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    site = next((venv / "lib").glob("python3*/site-packages"))
    run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], tmp)
    # The dependencies: this environment's site-packages, behind the wheel (a plain path
    # entry: its .pth files, such as the checkout's editable install, are not processed).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def plex(venv: Path, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PLEX_HOME", "PYTHONPATH")}
    return run([str(venv / "bin" / "python"), "-m", "plex", *args], cwd, env)


def test_the_wheel_ships_the_data_and_runs_outside_a_checkout(
    installed: Path, tmp_path: Path
) -> None:
    where = run(
        [str(installed / "bin" / "python"), "-c", "import plex; print(plex.__file__)"], tmp_path
    )
    assert str(installed) in where and str(ROOT) not in where  # the wheel, not the checkout
    shutil.copy(ROOT / "plexes" / "demo.yaml", tmp_path / "demo.yaml")
    out = plex(installed, "validate", "demo.yaml", cwd=tmp_path)
    assert "plex 'demo', 8 nodes" in out
    out = plex(installed, "show", "demo.yaml", "-o", "json", cwd=tmp_path)
    assert '"plex": "demo"' in out
    page = run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "from plex.services.nightly_report import render_html; "
            "print(render_html({'plex': 'demo', 'ok': True}, []))",
        ],
        tmp_path,
    )
    assert "Nightly of <code>demo</code>" in page  # the page's template is in the wheel
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert plex(installed, "--version", cwd=tmp_path).strip() == f"plex {declared}"


def test_validate_from_the_wheel_reads_the_shipped_recipes(installed: Path, tmp_path: Path) -> None:
    # A plex whose base the shipped images/ lacks fails naming the shipped directory.
    text = (ROOT / "plexes" / "demo.yaml").read_text().replace("debian-bookworm", "no-such-base")
    (tmp_path / "demo.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PLEX_HOME"}
    out = subprocess.run(
        [str(installed / "bin" / "python"), "-m", "plex", "validate", "demo.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "no base image 'no-such-base' (known: debian-bookworm" in out.stderr
    assert str(ROOT) not in out.stderr
