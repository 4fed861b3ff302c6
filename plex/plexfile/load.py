"""Loading a plex file: YAML text -> a validated `Plex`, or every problem with file:line.

The YAML (data, line map, keys given twice, alias loops and bombs) is `plex.plexfile.yamlfile`,
the loader of every file a user edits; cross-field rules live in `plex.plexfile.checks`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plex.errors import ConfigError, ConfigErrors, UsageError
from plex.model.plex import Plex
from plex.plexfile.checks import check_plex
from plex.plexfile.trust import check_ca_files
from plex.plexfile.yamlfile import Lines, YamlDoc, loc_of, parse_yaml, yaml_type


def with_line(err: ConfigError, lines: Lines) -> ConfigError:
    """`err` with the line of its field in the plex file, when it has none yet."""
    if err.line is not None or not err.path:
        return err
    line = YamlDoc(err.file, None, lines).line(loc_of(err.path))
    return ConfigError(err.file, err.path, err.problem, line, err.hint) if line else err


def parse_plex(text: str, file: str = "<plex>") -> Plex:
    """Parse and validate plex YAML text. Raises ConfigErrors with every problem found."""
    return parse_plex_doc(text, file)[0]


def parse_plex_doc(text: str, file: str) -> tuple[Plex, YamlDoc]:
    """The plex and its parsed file (data and line map, for rules checked after loading)."""
    doc = parse_yaml(text, file)
    data = doc.data
    if data is None:
        raise ConfigErrors(
            [ConfigError(file, "", "the file is empty; a plex is a YAML mapping", 1)]
        )
    if not isinstance(data, dict):
        raise ConfigErrors([doc.error((), f"must be a YAML mapping, not {yaml_type(data)}")])
    if any(not isinstance(k, str) for k in data):
        raise ConfigErrors([doc.error((), "top-level keys must be strings")])
    plex = doc.validate(Plex, {"source": file})
    problems = [p for p in check_plex(plex) if p.severity == "error"]
    if problems:
        raise ConfigErrors([doc.error(p.loc, p.message) for p in problems])
    return plex, doc


def load_plex(path: Path) -> Plex:
    return load_plex_doc(path)[0]


def load_plex_doc(path: Path) -> tuple[Plex, YamlDoc]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plex file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(str(path), "", f"cannot read: {e}")]) from None
    plex, doc = parse_plex_doc(text, str(path))
    if plex.tls.ca_files:
        problems = check_ca_files(plex)
        if problems:
            raise ConfigErrors([doc.error(loc, msg) for loc, msg in problems])
    return plex, doc


def find_plex(name_or_path: str, plexes_dir: Path | None = None) -> Path:
    """`demo` -> plexes/demo.yaml (searched from $PLEX_HOME or the cwd); a path stays a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    base = plexes_dir or Path(os.environ.get("PLEX_HOME", ".")) / "plexes"
    for suffix in (".yaml", ".yml"):
        cand = base / f"{name_or_path}{suffix}"
        if cand.exists():
            return cand
    known = sorted(x.stem for x in base.glob("*.yaml")) if base.is_dir() else []
    raise UsageError(
        f"no plex named '{name_or_path}' in {base}",
        hint=f"known plexes: {', '.join(known)}" if known else "create plexes/<name>.yaml",
    )


def json_schema() -> dict[str, Any]:
    schema = Plex.model_json_schema(mode="validation")
    schema["properties"].pop("source", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "plex definition"
    return schema
