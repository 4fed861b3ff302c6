"""Golden files of the registry renderers, shared by the registry test modules."""

from __future__ import annotations

import os
from pathlib import Path

from plex.model.plex import Engine, Plex
from plex.plexfile.load import load_plex
from plex.registry.base import RenderedFile
from plex.registry.credentials import Credentials, parse_credentials

GOLDEN = Path(__file__).parent / "golden" / "registry"


def bundle(files: list[RenderedFile]) -> str:
    """Rendered files as one text: a header per file (path, mode, owner, secret), then it."""
    out = []
    for f in files:
        flag = " secret" if f.secret else ""
        out.append(f"==> {f.path} mode={f.mode:04o} owner={f.owner}:{f.group}{flag} <==\n")
        out.append(f.content)
    return "".join(out)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with PLEX_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path} differs: PLEX_UPDATE_GOLDEN=1 to accept"


CASES = ("one", "four", "http")


def golden_case(name: str, engine: Engine) -> Plex:
    """A plex from golden/registry/cases/<name>.yaml with its registry engine set."""
    plex = load_plex(GOLDEN / "cases" / f"{name}.yaml")
    return plex.model_copy(update={"registry": plex.registry.model_copy(update={"engine": engine})})


def case_credentials() -> Credentials:
    path = GOLDEN / "cases" / "credentials.yaml"
    return parse_credentials(path.read_text(), str(path))
