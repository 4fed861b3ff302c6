"""plex.model.record: the one JSON form of result and state records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from plex.model.record import record_json


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Inner:
    name: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    colour: Colour
    inner: tuple[Inner, ...]
    seconds: float
    started_at: float
    text: str = ""
    notes: list[str] = field(default_factory=list)


def test_fields_in_order_with_one_conversion_rule() -> None:
    rec = Outer(Colour.RED, (Inner("a", ("x",)),), 1.23456, 1.23456, "abcdef", ["n"])
    out = record_json(rec)
    assert list(out) == ["colour", "inner", "seconds", "started_at", "text", "notes"]
    assert out == {
        "colour": "red",
        "inner": [{"name": "a", "tags": ["x"]}],
        "seconds": 1.23,  # a duration: to 0.01 s
        "started_at": 1.23456,  # a timestamp: as it is
        "text": "abcdef",
        "notes": ["n"],
    }
    json.dumps(out)  # plain JSON all through


def test_shown_values_keep_their_place_and_omitted_fields_go() -> None:
    rec = Outer(Colour.RED, (), 0.0, 0.0, "abcdef")
    out = record_json(rec, omit={"notes"}, text=rec.text[-2:], extra=1)
    assert list(out) == ["colour", "inner", "seconds", "started_at", "text", "extra"]
    assert (out["text"], out["extra"]) == ("ef", 1)
