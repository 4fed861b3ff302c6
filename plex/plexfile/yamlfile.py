"""The one YAML loader for every file a user edits: plex files, bake recipes, base images,
probes, role profiles and registry credentials.

One parse (libyaml's composer when available) gives both the data and a line map (every key and
list index -> its 1-based line), and refuses what a plain `safe_load` hides or chokes on: keys
given twice (the last would silently win), aliases that contain themselves (infinite data) and
alias bombs (a few lines that expand to millions of nodes). A pydantic model then validates the
data; its errors come back as `ConfigError`s naming file:line and the field path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from plex.errors import ConfigError, ConfigErrors
from plex.model.sizes import SIZE_PATTERN

Loc = tuple[str | int, ...]
Lines = dict[Loc, int]
M = TypeVar("M", bound=BaseModel)

# libyaml when available: every plan and bake reads recipes and profiles, even a no-op one.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# How many nodes the data may hold once aliases are expanded: far beyond any real file (the
# biggest shipped one has a few hundred), far below what would exhaust memory (billion laughs).
MAX_NODES = 100_000
DEEP = "the YAML is nested too deeply"


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML file: its data and the line of every key and list item."""

    file: str
    data: Any
    lines: Lines = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest ancestor that has one."""
        if not loc:
            return 1  # the document as a whole (its type, its top-level keys)
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None

    def error(self, loc: Loc, problem: str) -> ConfigError:
        return _error(self.file, dotted(loc), problem, self.line(loc))

    def at(self, path: str, problem: str) -> ConfigError:
        """An error for a dotted field path (`files[2].mode`), with its line."""
        return self.error(loc_of(path), problem)

    def validate(self, model: type[M], extra: dict[str, Any] | None = None) -> M:
        """The data as `model`, or ConfigErrors naming file:line and field for each problem."""
        if self.data is not None and not isinstance(self.data, dict):
            raise ConfigErrors([self.error((), f"must be a mapping, not {yaml_type(self.data)}")])
        try:
            return model.model_validate({**(self.data or {}), **(extra or {})})
        except ValidationError as e:
            raise ConfigErrors(
                [self.error(_loc(dict(err)), describe(dict(err))) for err in e.errors()]
            ) from None


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Parse YAML text into data and a line map; ConfigErrors for anything a user must fix."""
    try:
        return _parse(text, file)
    except RecursionError:
        # The constructor recurses: absurdly deep nesting must be an error, not a crash.
        raise ConfigErrors([ConfigError(file, "", DEEP, 1)]) from None


def read_yaml(path: Path, what: str = "file") -> YamlDoc:
    """`parse_yaml` of a file; a missing or unreadable file is one ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigErrors([ConfigError(str(path), "", f"no such {what}")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(str(path), "", f"cannot read: {e}")]) from None
    return parse_yaml(text, str(path))


def load_model(path: Path, model: type[M], what: str = "file") -> tuple[M, YamlDoc]:
    """Read, parse and validate one file as `model` (an empty file is an empty mapping)."""
    doc = read_yaml(path, what)
    return doc.validate(model), doc


def _parse(text: str, file: str) -> YamlDoc:
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDoc(file, None)
        lines, problems = _walk(root)
        if problems:
            raise ConfigErrors(
                [_error(file, path, problem, line) for path, problem, line in problems]
            )
        data = loader.construct_document(root)
    except yaml.YAMLError as e:
        e = _explained(text, e)
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or "invalid YAML"
        if "nesting depth" in problem:  # libyaml's limit: the same words as the RecursionError
            raise ConfigErrors([_error(file, "", DEEP, line)]) from None
        raise ConfigErrors([_error(file, "", f"invalid YAML: {problem}", line)]) from None
    finally:
        loader.dispose()
    return YamlDoc(file, data, lines)


def _explained(text: str, error: yaml.YAMLError) -> yaml.YAMLError:
    """PyYAML's own wording of a syntax error: libyaml's drops the culprit (it says "found
    character that cannot start any token" where PyYAML names the tab)."""
    if _LOADER is yaml.SafeLoader:
        return error
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        return e
    except RecursionError:
        pass  # deeper than Python's stack: libyaml's error is the one
    return error


def _walk(root: yaml.Node) -> tuple[Lines, list[tuple[str, str, int]]]:
    """The line map, and (path, problem, line) for keys given twice, aliases that contain
    themselves and data that expands beyond MAX_NODES."""
    lines: Lines = {}
    problems: list[tuple[str, str, int]] = []
    # An alias reuses a node: walk each node once, so shared aliases stay cheap; count what
    # each node expands to, so a bomb is found without expanding it.
    size: dict[int, int] = {}

    def walk(node: yaml.Node, path: Loc, parents: frozenset[int]) -> int:
        if id(node) in parents:
            problems.append((dotted(path), "a YAML alias that contains itself", _line_of(node)))
            return 1
        if id(node) in size:
            return size[id(node)]
        inside = parents | {id(node)}
        total = 1
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                p = (*path, key)
                line = _line_of(k)
                ident = (k.tag, key)
                if ident in first and key != "<<":
                    problems.append(
                        (dotted(p), f"key given twice (first on line {first[ident]})", line)
                    )
                first.setdefault(ident, line)
                lines.setdefault(p, line)
                total += 1 + walk(v, p, inside)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = (*path, i)
                lines.setdefault(p, _line_of(v))
                total += walk(v, p, inside)
        size[id(node)] = total
        return total

    if walk(root, (), frozenset()) > MAX_NODES and not problems:
        problems.append(
            ("", f"the YAML expands to more than {MAX_NODES} nodes (an alias bomb?)", 1)
        )
    return lines, problems


def _line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_PLAIN_KEY = re.compile(r"[^\s.\[\]\"']+")


def dotted(loc: Loc) -> str:
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


def loc_of(path: str) -> Loc:
    """The inverse of `dotted`: `registry.upstreams[0].name` -> ('registry', 'upstreams', 0,
    'name'), so an error found after loading (bake-time rules) can be given its line."""
    loc: list[str | int] = []
    for m in _PART.finditer(path):
        key, index, quoted = m.groups()
        loc.append(
            key if key is not None else int(index) if index is not None else json.loads(quoted)
        )
    return tuple(loc)


def one_line(text: str) -> str:
    """Error lines quote user input: escape what would break the line (newline, NEL, U+2028)."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _error(file: str, path: str, problem: str, line: int | None) -> ConfigError:
    return ConfigError(file, one_line(path), one_line(problem), line)


def describe(err: dict[str, Any]) -> str:
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
        pattern = err.get("ctx", {}).get("pattern", "")
        like = "a size like 2GiB" if pattern == SIZE_PATTERN else f"like {pattern}"
        return f"'{err.get('input')}' is not {like}"
    if kind == "invalid_key":
        key = err.get("input")
        why = " (YAML reads on/off/yes/no as booleans: quote it)" if isinstance(key, bool) else ""
        return f"the key {key!r} is not a string{why}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping, not {yaml_type(err.get('input'))}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        got = yaml_type(err.get("input"))
        return f"{msg.lower()} (got {got} {err.get('input')!r})"
    return msg[0].lower() + msg[1:] if msg else kind


def yaml_type(value: object) -> str:
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


def _loc(err: dict[str, Any]) -> Loc:
    # pydantic marks a bad mapping key with a trailing '[key]': the key itself is the path.
    # (The models have no unions that pydantic would tag in loc: see IncusConfig._verify.)
    # A key that is not a string at all ends its loc with a position: the mapping is the path.
    loc = tuple(p for p in err["loc"] if p != "[key]")
    return loc[:-1] if err["type"] == "invalid_key" else loc
