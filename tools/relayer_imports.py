"""Rewrite imports of the pre-layers module paths (e.g. `plex.config`, `plex.deploy.ops`) to the
layered package (commit "Layers: ..."). For branches started before it: after rebasing, run

    python3 tools/relayer_imports.py $(git diff --name-only main... -- '*.py')
    .venv/bin/ruff check --select I --fix plex tests bench

Temporary: removed once every branch has moved over.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

MOVES = {  # old module -> new module (whole files)
    "plex.owner": "plex.model.owner",
    "plex.deploy.observed": "plex.model.observed",
    "plex.topology": "plex.model.topology",
    "plex.config": "plex.model.plex",
    "plex.identity": "plex.model.identity",
    "plex.checks": "plex.plexfile.checks",
    "plex.crosscheck": "plex.plexfile.crosscheck",
    "plex.trust": "plex.plexfile.trust",
    "plex.genders": "plex.deploy.genders",
    "plex.haproxy": "plex.lb.haproxy",
    "plex.deploy.balancers": "plex.services.balancers",
    "plex.state": "plex.store.state",
    "plex.lock": "plex.store.lock",
    "plex.bake.catalog": "plex.store.catalog",
    "plex.bake.downloads": "plex.store.downloads",
    "plex.bake.releases": "plex.store.releases",
    "plex.bake.artifacts": "plex.store.artifacts",
    "plex.nightly.channels": "plex.store.channels",
    "plex.run": "plex.backends.run",
    "plex.bake.pipeline": "plex.services.bake",
    "plex.bake.vm": "plex.services.bake_vm",
    "plex.bake.remote_layer": "plex.services.remote_layer",
    "plex.bake.artifact": "plex.services.images",
    "plex.deploy.apply": "plex.services.apply",
    "plex.deploy.ops": "plex.services.deploy",
    "plex.registry.ops": "plex.services.registry",
    "plex.nightly.run": "plex.services.nightly",
    "plex.nightly.report": "plex.services.nightly_report",
    "plex.nightly.smoke": "plex.services.smoke",
    "plex.ui": "plex.cli.ui",
    "plex.cli_app": "plex.cli.app",
    "plex.commands.bake": "plex.cli.commands.bake",
    "plex.commands.config": "plex.cli.commands.config",
    "plex.commands.deploy": "plex.cli.commands.deploy",
    "plex.commands.identity": "plex.cli.commands.identity",
    "plex.commands.image": "plex.cli.commands.image",
    "plex.commands.nightly": "plex.cli.commands.nightly",
    "plex.commands.plan": "plex.cli.commands.plan",
    "plex.commands.registry_config": "plex.cli.commands.registry_config",
    "plex.commands": "plex.cli.commands",
}
LOADER = ["_line_map", "_nearest_line", "_PLAIN_KEY", "_dotted", "_one_line", "_error",
          "_describe", "_yaml_type", "_loc", "parse_plex", "_parse", "load_plex", "find_plex",
          "json_schema"]
SYMBOLS = {  # (old module, name) -> new module, for split modules
    **{("plex.config", n): "plex.plexfile.load" for n in LOADER},
    **{("plex.identity", n): "plex.store.identity" for n in
       ["identity_dir", "load_identity", "save_identity", "ensure_identity", "require_identity"]},
    ("plex.deploy.spec", "ImageRef"): "plex.model.image",
    ("plex.deploy.ops", "destroy"): "plex.services.destroy",
    ("plex.services.deploy", "destroy"): "plex.services.destroy",
    **{("plex.bake.catalog", n): "plex.model.image" for n in
       ["image_alias", "digest_alias", "package_alias"]},
}


def path_of(mod: str, pkg: bool = False) -> Path:
    p = Path(*mod.split("."))
    return p / "__init__.py" if pkg else p.with_suffix(".py")


def _module_for(mod: str, name: str | None) -> tuple[str, str | None]:
    """(new module, new name) for `from mod import name` (name None: `import mod`)."""
    if name is not None and (mod, name) in SYMBOLS:
        return SYMBOLS[(mod, name)], name
    if name is not None:
        sub = f"{mod}.{name}"
        if sub in MOVES:  # `from plex import owner`: a module imported from its package
            new = MOVES[sub]
            pkg, _, leaf = new.rpartition(".")
            return pkg, leaf
    return MOVES.get(mod, mod), name


def rewrite(text: str) -> str:
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and (node.module == "plex" or node.module.startswith("plex.")):
            groups: dict[str, list[str]] = {}
            changed = False
            for a in node.names:
                new_mod, new_name = _module_for(node.module, a.name)
                asname = a.asname
                if new_name != a.name and asname is None:
                    asname = a.name
                if asname == new_name:
                    asname = None
                changed |= new_mod != node.module or new_name != a.name
                groups.setdefault(new_mod, []).append(
                    f"{new_name} as {asname}" if asname else str(new_name))
            if not changed:
                continue
            indent = " " * node.col_offset
            stmts = [f"from {m} import {', '.join(ns)}" for m, ns in groups.items()]
            edits.append((node.lineno, node.end_lineno or node.lineno,
                          ("\n" + indent).join(stmts)))
        elif isinstance(node, ast.Import):
            if any(a.name in MOVES for a in node.names):
                assert len(node.names) == 1, node.lineno
                a = node.names[0]
                new = MOVES[a.name]
                s = f"import {new}" + (f" as {a.asname}" if a.asname else "")
                edits.append((node.lineno, node.end_lineno or node.lineno, s))
    for start, end, new in sorted(edits, reverse=True):
        first, last = lines[start - 1], lines[end - 1]
        indent = re.match(r"\s*", first).group(0)  # type: ignore[union-attr]
        m = re.search(r"\)?\s*(#.*)$", last) if end == start or last.rstrip().endswith(")") \
            else None
        comment = ""
        # keep a trailing comment of a one-line import (e.g. `# noqa: E402`)
        if start == end and "#" in last:
            comment = "  " + last[last.index("#"):].rstrip("\n")
        elif m and last.rstrip().endswith(")") is False and m.group(1):
            comment = "  " + m.group(1)
        lines[start - 1:end] = [indent + s.strip() + comment + "\n" for s in new.split("\n")]
    return "".join(lines)


if __name__ == "__main__":
    for f in sys.argv[1:]:
        if Path(f).suffix == ".py" and Path(f).exists():
            p = Path(f)
            old = p.read_text()
            new = rewrite(old)
            if new != old:
                p.write_text(new)
                print("rewrote", f)
