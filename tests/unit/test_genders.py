"""`plex inventory -o genders`: checked with genders' own parser (nodeattr, Debian's genders)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from plex.deploy.genders import _attr, genders
from plex.model import topology
from plex.plexfile.load import load_plex

ROOT = Path(__file__).resolve().parents[2]


def nodeattr(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("nodeattr")
    if exe is None:
        pytest.fail("nodeattr (Debian package genders, from bin/setup-incus) is required")
    return subprocess.run([exe, "-f", str(db), *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", ["demo", "omniplex", "verniplex"])
def test_every_shipped_plex_is_a_valid_genders_database(name: str, tmp_path: Path) -> None:
    plex = load_plex(ROOT / "plexes" / f"{name}.yaml")
    db = tmp_path / "genders"
    db.write_text(genders(plex))
    check = nodeattr(db, "-k")
    assert check.returncode == 0 and "0 parse errors" in check.stdout + check.stderr, check
    # One line per node, and genders sees exactly the plex's nodes.
    listed = nodeattr(db, "-n", f"plex={name}").stdout.split()
    assert sorted(listed) == sorted(n.name for n in topology.nodes(plex))
    assert len([ln for ln in db.read_text().splitlines() if not ln.startswith("#")]) == len(
        topology.nodes(plex)
    )


def test_queries_answer_role_placement_and_addresses(tmp_path: Path) -> None:
    db = tmp_path / "genders"
    db.write_text(genders(load_plex(ROOT / "plexes" / "omniplex.yaml")))
    assert nodeattr(db, "-c", "master").stdout.strip() == "omniplex-server1"
    assert set(nodeattr(db, "-c", "kube&&member=gamma").stdout.strip().split(",")) == {
        "omniplex-server3",
        "omniplex-agent3",
        "omniplex-agent6",
    }
    assert nodeattr(db, "-v", "omniplex-lb2", "ip").stdout.strip() == "10.20.0.12"
    assert nodeattr(db, "-v", "omniplex-lb2", "role").stdout.strip() == "lb"


def test_the_checker_is_real_it_rejects_a_duplicate_attribute(tmp_path: Path) -> None:
    db = tmp_path / "genders"
    db.write_text("node1 role=server,role=agent\n")
    assert nodeattr(db, "-k").returncode != 0


@pytest.mark.parametrize("bad", ["a,b", "a=b", "a b", "50%n", "x#y"])
def test_characters_genders_reserves_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        _attr("ok", bad)
    with pytest.raises(ValueError):
        _attr(bad)
