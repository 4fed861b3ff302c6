"""Loading a plex file: YAML text -> a validated `Plex`, or every problem with file:line.

The YAML is composed once more for a line map (every key and list index -> its line) and for
what `safe_load` hides: keys given twice and aliases that contain themselves. Cross-field rules
live in `plex.plexfile.checks`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from plex.errors import ConfigError, ConfigErrors, UsageError
from plex.model.plex import Plex
from plex.plexfile.checks import check_plex
from plex.plexfile.trust import check_ca_files


def _line_map(text: str) -> tuple[dict[tuple[str | int, ...], int], list[tuple[str, str, int]]]:
    """Map every YAML path (keys and list indexes) to its 1-based line, for error messages.

    Also returns what a plain `safe_load` hides: keys given twice (the last one would silently
    win) and aliases that contain themselves (infinite data), as (path, problem, line).
    """
    lines: dict[tuple[str | int, ...], int] = {}
    problems: list[tuple[str, str, int]] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines, problems
    # An alias reuses a node: walk each node once, so shared or recursive aliases stay cheap.
    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[str | int, ...], parents: frozenset[int]) -> None:
        if id(node) in parents:
            problems.append(
                (_dotted(path), "a YAML alias that contains itself", node.start_mark.line + 1)
            )
            return
        if id(node) in seen:
            return
        seen.add(id(node))
        inside = parents | {id(node)}
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                p = (*path, key)
                line = k.start_mark.line + 1
                ident = (k.tag, key)
                if ident in first and key != "<<":
                    problems.append(
                        (_dotted(p), f"key given twice (first on line {first[ident]})", line)
                    )
                first.setdefault(ident, line)
                lines.setdefault(p, line)
                walk(v, p, inside)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = (*path, i)
                lines.setdefault(p, v.start_mark.line + 1)
                walk(v, p, inside)

    if root is not None:
        walk(root, (), frozenset())
    return lines, problems


def _nearest_line(
    lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]
) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_PLAIN_KEY = re.compile(r"[^\s.\[\]\"']+")


def _dotted(loc: tuple[str | int, ...]) -> str:
    """`roles.server.config["limits.cpu"]`: keys a user may spell oddly are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            out += f"[{json.dumps(part)}]"
        else:
            out += f".{part}" if out else part
    return out


_PART = re.compile(r'\.?([^\s.\[\]"\']+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def loc_of(dotted: str) -> tuple[str | int, ...]:
    """The inverse of `_dotted`: `registry.upstreams[0].name` -> ('registry', 'upstreams', 0,
    'name'), so an error found after loading (bake-time rules) can be given its line."""
    loc: list[str | int] = []
    for m in _PART.finditer(dotted):
        key, index, quoted = m.groups()
        loc.append(
            key if key is not None else int(index) if index is not None else json.loads(quoted)
        )
    return tuple(loc)


def with_line(err: ConfigError, lines: dict[tuple[str | int, ...], int]) -> ConfigError:
    """`err` with the line of its field in the plex file, when it has none yet."""
    if err.line is not None or not err.path:
        return err
    line = _nearest_line(lines, loc_of(err.path))
    return ConfigError(err.file, err.path, err.problem, line, err.hint) if line else err


def _one_line(text: str) -> str:
    """Error lines quote user input: escape what would break the line (newline, NEL, U+2028)."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _error(file: str, path: str, problem: str, line: int | None) -> ConfigError:
    return ConfigError(file, _one_line(path), _one_line(problem), line)


def _describe(err: dict[str, Any]) -> str:
    """Turn one pydantic error into a short sentence a user understands."""
    kind = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"'{err.get('input')}' is not one of {expected}"
    if kind == "string_pattern_mismatch":
        return f"'{err.get('input')}' is not a size like 2GiB"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping, not {_yaml_type(err.get('input'))}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        got = _yaml_type(err.get("input"))
        return f"{msg.lower()} (got {got} {err.get('input')!r})"
    return msg[0].lower() + msg[1:] if msg else kind


def _yaml_type(value: object) -> str:
    """A value's type as a YAML user names it."""
    names = {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }
    return names.get(type(value), type(value).__name__)


def _loc(err: dict[str, Any]) -> tuple[str | int, ...]:
    # pydantic marks a bad mapping key with a trailing '[key]': the key itself is the path.
    # (The model has no unions that pydantic would tag in loc: see _verify.)
    return tuple(p for p in err["loc"] if p != "[key]")


def parse_plex(text: str, file: str = "<plex>") -> Plex:
    """Parse and validate plex YAML text. Raises ConfigErrors with every problem found."""
    try:
        return _parse(text, file)
    except RecursionError:
        # PyYAML composes recursively: absurdly deep nesting must be an error, not a crash.
        raise ConfigErrors([ConfigError(file, "", "the YAML is nested too deeply", 1)]) from None


def _parse(text: str, file: str) -> Plex:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigErrors([_error(file, "", f"invalid YAML: {problem}", line)]) from None
    if data is None:
        raise ConfigErrors(
            [ConfigError(file, "", "the file is empty; a plex is a YAML mapping", 1)]
        )
    if not isinstance(data, dict):
        raise ConfigErrors([_error(file, "", f"must be a YAML mapping, not {_yaml_type(data)}", 1)])
    if any(not isinstance(k, str) for k in data):
        raise ConfigErrors([_error(file, "", "top-level keys must be strings", 1)])
    lines, structural = _line_map(text)
    if structural:
        raise ConfigErrors(
            [_error(file, path, problem, line) for path, problem, line in structural]
        )
    try:
        plex = Plex.model_validate({**data, "source": file})
    except ValidationError as e:
        errors = []
        for err in e.errors():
            loc = _loc(dict(err))
            errors.append(
                _error(file, _dotted(loc), _describe(dict(err)), _nearest_line(lines, loc))
            )
        raise ConfigErrors(errors) from None
    problems = [p for p in check_plex(plex) if p.severity == "error"]
    if problems:
        raise ConfigErrors(
            [_error(file, p.path, p.message, _nearest_line(lines, p.loc)) for p in problems]
        )
    return plex


def load_plex(path: Path) -> Plex:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plex file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(str(path), "", f"cannot read: {e}")]) from None
    plex = parse_plex(text, str(path))
    if plex.tls.ca_files:
        problems = check_ca_files(plex)
        if problems:
            lines, _ = _line_map(text)
            raise ConfigErrors(
                [
                    _error(str(path), _dotted(loc), msg, _nearest_line(lines, loc))
                    for loc, msg in problems
                ]
            )
    return plex


def find_plex(name_or_path: str, plexes_dir: Path | None = None) -> Path:
    """`demo` -> plexes/demo.yaml (searched from $PLEX_HOME or the cwd); a path stays a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    import os

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
