"""Fuzzing the plex loader: whatever the YAML, the outcome is a Plex or ConfigErrors, never a crash.

Inputs: random YAML documents, random text, and mutations of the real plexes/demo.yaml (keys
dropped, values replaced by random strings/ints/lists/mappings, values swapped between paths,
types changed). Every case goes through parse_plex; a share also through `plex validate`.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plex.errors import ConfigErrors
from plex.model.plex import Plex
from plex.plexfile.load import parse_plex

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

DEMO_TEXT = (Path(__file__).resolve().parents[2] / "plexes" / "demo.yaml").read_text()
DEMO: dict[str, Any] = yaml.safe_load(DEMO_TEXT)

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Path_ = tuple[str | int, ...]

# Scalars a YAML author could plausibly write, including the ones that look like other types.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "yes",
            "null",
            "~",
            "10.77.0.0/24",
            "10.77.0.1",
            "10.77.0.300",
            "::1",
            "fd00::/8",
            "2GiB",
            "1h30m",
            "v1.31.4+rke2r1",
            "stable",
            "vm",
            "container",
            "https://example.invalid",
            "[/x]",
            "[bold]",
            "a" * 300,
            "demo-server1",
            "zot",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(0, 9)), inner, max_size=4),
    ),
    max_leaves=12,
)


def all_paths(data: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path to a value inside nested dicts and lists (the root excluded)."""
    if isinstance(data, dict):
        items: list[tuple[str | int, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return
    for k, v in items:
        p = (*prefix, k)
        yield p
        yield from all_paths(v, p)


DEMO_PATHS = list(all_paths(DEMO))


def get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def parent_and_key(data: Any, path: Path_) -> tuple[Any, str | int]:
    return get(data, path[:-1]), path[-1]


@st.composite
def mutated_demo(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(DEMO)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(all_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = parent_and_key(data, path)
        op = draw(st.sampled_from(["drop", "replace", "swap", "retype", "add"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "swap":
            other = draw(st.sampled_from(paths))
            if other[: len(path)] != path and path[: len(other)] != other:
                oparent, okey = parent_and_key(data, other)
                parent[key], oparent[okey] = oparent[okey], parent[key]
        elif op == "retype":
            v = parent[key]
            parent[key] = draw(st.sampled_from([str(v), [v], {"value": v}, None, 0, True]))
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return data


def outcome(text: str) -> Plex | None:
    """parse_plex's verdict: a Plex, or None for ConfigErrors. Anything else fails the test."""
    try:
        return parse_plex(text, "fuzz.yaml")
    except ConfigErrors as e:
        assert e.errors, "ConfigErrors without an error"
        for err in e.errors:
            assert "\n" not in err.message, err.message
            assert err.message.startswith("fuzz.yaml"), err.message
        return None


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@FAST
@given(values)
def test_random_yaml_documents(data: Any) -> None:
    outcome(dump(data))


@FAST
@given(st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#%@ \n\t,?019.")), max_size=80))
def test_random_text(text: str) -> None:
    outcome(text)


@FAST
@given(mutated_demo())
def test_mutated_demo(data: dict[str, Any]) -> None:
    plex = outcome(dump(data))
    if plex is not None:
        assert plex.name == data["name"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(mutated_demo(), values))
def test_validate_cli_on_mutations(cli: Cli, data: Any) -> None:
    """Through the CLI: exit 0 or 2, each stderr line a one-liner (cli() rejects tracebacks)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.yaml"
        path.write_text(dump(data))
        result = cli("validate", str(path))
    assert result.code in (0, 2)
    if result.code == 2:
        assert any(line.startswith(f"error: {path}") for line in result.err_lines)
        # Warnings about the same file may come with the errors (a smoke image no upstream
        # serves), and an error may carry a hint line.
        lines = (f"error: {path}", f"warning: {path}", "  hint: ")
        assert all(line.startswith(lines) for line in result.err_lines), result.err_lines


def test_mutations_do_reach_valid_and_invalid_plexes() -> None:
    """Guard against a fuzzer that only ever produces garbage (or only valid files)."""
    assert outcome(DEMO_TEXT) is not None
    demo = copy.deepcopy(DEMO)
    del demo["roles"]["server"]["cpu"]  # an optional key: still valid
    assert outcome(dump(demo)) is not None
    demo["roles"]["server"]["count"] = [3]
    assert outcome(dump(demo)) is None


@pytest.mark.parametrize("path", DEMO_PATHS, ids=[".".join(map(str, p)) for p in DEMO_PATHS])
def test_every_demo_key_dropped_or_nulled(path: Path_) -> None:
    """Exhaustively: each single key or list item of the demo removed, then set to null."""
    for op in ("drop", "null"):
        data = copy.deepcopy(DEMO)
        parent, key = parent_and_key(data, path)
        if op == "drop":
            del parent[key]
        else:
            parent[key] = None
        outcome(dump(data))
