"""The JSON form of plex's result and state records (dataclasses), written once.

A record's JSON form is its fields in declaration order, with one conversion rule for every
record: enums by value, tuples and lists as lists, nested records by their own `to_json` (or by
this rule), and durations (fields named `seconds`) to 0.01 s, since more digits are timing
noise. A record that shows a field differently (a renamed key, a derived value, a shortened
text) passes it by name: a value for a field keeps that field's place; any other name is added
after the fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from enum import Enum
from typing import Any

DURATION = "seconds"


def plain(value: Any) -> Any:
    """`value` as json.dumps takes it, by the rule above (dicts as they are)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return record_json(value)
    return value


def record_json(record: Any, *, omit: Collection[str] = (), **shown: Any) -> dict[str, Any]:
    """`record`'s fields as JSON (see the module docstring); `omit` names fields not shown."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in omit:
            continue
        value = getattr(record, f.name)
        out[f.name] = round(value, 2) if f.name == DURATION else plain(value)
    out.update(shown)
    return out
