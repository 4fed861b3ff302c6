"""Where the data files plex reads are: bake/ (recipes, templates), deploy/ (probes, role
profiles) and images/ (base definitions). Resolved in one place for every command.

1. `$PLEX_HOME`, when set;
2. the current directory, when it has a bake/ (a checkout, or a project with its own files);
3. the copies shipped inside an installed wheel (plex/_data, see setup.py);
4. the checkout the code runs from.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
SHIPPED = _PACKAGE / "_data"
CHECKOUT = _PACKAGE.parent


def project_root() -> Path:
    home = os.environ.get("PLEX_HOME")
    if home:
        return Path(home)
    for root in (Path(), SHIPPED, CHECKOUT):
        if (root / "bake").is_dir():
            return root
    return Path()
