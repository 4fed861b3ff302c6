"""Golden files of the registry renderers, shared by the registry test modules."""

from __future__ import annotations

import os
from pathlib import Path

from plex.registry import RenderedFile

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
