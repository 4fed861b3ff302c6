"""The one YAML loader (plex.plexfile.yamlfile): data and line map from one parse, and what a
plain safe_load hides (keys given twice) or cannot survive (alias loops, alias bombs)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from plex.errors import ConfigError, ConfigErrors
from plex.plexfile.yamlfile import MAX_NODES, dotted, loc_of, parse_yaml
from plex.registry.credentials import parse_credentials


def messages(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        parse_yaml(text, "f.yaml")
    return [e.message for e in exc.value.errors]


def test_data_and_the_line_of_every_key_and_item() -> None:
    doc = parse_yaml("# a comment\na:\n  b: 1\n  c:\n    - x\n    - {d: 2}\n", "f.yaml")
    assert doc.data == {"a": {"b": 1, "c": ["x", {"d": 2}]}}
    assert doc.lines[("a",)] == 2
    assert doc.lines[("a", "b")] == 3
    assert doc.lines[("a", "c", 1)] == 6
    assert doc.lines[("a", "c", 1, "d")] == 6
    # A field the file does not have takes its nearest ancestor's line.
    assert doc.line(("a", "c", 1, "missing")) == 6
    assert doc.line(("nowhere",)) is None


def test_a_key_given_twice_is_refused_at_its_second_line() -> None:
    assert messages("a: 1\nb:\n  c: 1\n  c: 2\n") == [
        "f.yaml:4: b.c: key given twice (first on line 3)"
    ]


def test_merge_keys_are_not_duplicates() -> None:
    doc = parse_yaml("base: &b {x: 1}\none:\n  <<: *b\n  y: 2\n", "f.yaml")
    assert doc.data["one"] == {"x": 1, "y": 2}


def test_an_alias_that_contains_itself_is_refused() -> None:
    assert messages("a: &loop\n  - *loop\n") == [
        "f.yaml:1: a[0]: a YAML alias that contains itself"  # the anchor's line
    ]


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    # Billion laughs: nine levels of ten aliases each is 10**9 strings once expanded.
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    assert messages("\n".join(lines) + "\n") == [
        f"f.yaml:1: the YAML expands to more than {MAX_NODES} nodes (an alias bomb?)"
    ]


def test_shared_aliases_below_the_bound_are_fine() -> None:
    doc = parse_yaml("a: &x [1, 2]\nb: *x\nc: *x\n", "f.yaml")
    assert doc.data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_syntax_errors_name_the_line_and_pyyaml_wording() -> None:
    assert messages("a:\n\tb: 1\n") == [
        "f.yaml:2: invalid YAML: found character '\\t' that cannot start any token"
    ]
    assert messages("a: [1, 2\n") == [
        "f.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_too_deep_is_one_line() -> None:
    assert messages("a: " + "[" * 5000 + "]" * 5000 + "\n") == [
        "f.yaml:1: the YAML is nested too deeply"
    ]


class _Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int = 0


def test_validate_names_file_line_and_field() -> None:
    doc = parse_yaml("name: x\ncount: many\nextra: 1\n", "t.yaml")
    with pytest.raises(ConfigErrors) as exc:
        doc.validate(_Thing)
    assert [e.message for e in exc.value.errors] == [
        "t.yaml:2: count: input should be a valid integer, unable to parse string as an "
        "integer (got string 'many')",
        "t.yaml:3: extra: unknown key",
    ]
    with pytest.raises(ConfigErrors) as exc:
        parse_yaml("- 1\n", "t.yaml").validate(_Thing)
    assert [e.message for e in exc.value.errors] == ["t.yaml:1: must be a mapping, not list"]


def test_dotted_and_loc_of_are_inverses() -> None:
    loc = ("roles", "server", "config", "limits.cpu", 0)
    assert dotted(loc) == 'roles.server.config["limits.cpu"][0]'
    assert loc_of(dotted(loc)) == loc


def test_credentials_refuse_a_login_given_twice_without_quoting_it() -> None:
    text = "docker.io:\n  username: bot\n  password: s3cret\n  password: other\n"
    with pytest.raises(ConfigError) as exc:
        parse_credentials(text, "creds.yaml")
    assert exc.value.message == (
        'creds.yaml:4: ["docker.io"].password: key given twice (first on line 3)'
    )
    assert "s3cret" not in exc.value.message and "other" not in exc.value.message
