"""Which config keys a Zot release accepts, and the check Zot itself makes. Pure.

Zot loads config.json with viper's `UnmarshalExact` (project-zot/zot `pkg/cli/server/root.go`):
viper lowercases every key, mapstructure matches keys to struct fields case-insensitively, and
any key left over fails `zot serve` and `zot verify` alike with "failed to load config due to
unknown keys" and the keys' paths (`extensions.sync.registries[0].preservedigest`).

`zot_keys.json` beside this module holds, per key path, the Go file declaring it and the tags
accepting it; `bin/zot-config-keys` regenerates it from a zot checkout's structs at each tag.
Paths: `a.b` nested key, `a[]` list element, `a.*` any map key, `a.**` anything below.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("zot_keys.json")
UNKNOWN_KEYS = "failed to load config due to unknown keys"


def _version_tuple(v: str) -> tuple[int, ...]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", v)
    if not m:
        raise ValueError(f"'{v}' is not a zot release version (vX.Y.Z)")
    return tuple(int(x) for x in m.groups())


@dataclass(frozen=True)
class KeySet:
    version: str  # the release whose keys these are (a newer unknown release: the newest known)
    patterns: frozenset[tuple[str, ...]]  # lowercased path segments

    def accepts(self, path: str) -> bool:
        """`path` as this file writes them (`a.b[].c`): does this release accept the key?"""
        return _matches(self.patterns, _segments(path.lower()))


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    return data


def known_versions() -> list[str]:
    return list(_data()["versions"])


def key_source(path: str) -> dict[str, str] | None:
    """Where a key comes from upstream: {"file", "since"[, "until"]}, or None."""
    entry = _data()["keys"].get(path)
    return dict(entry) if entry else None


@functools.lru_cache(maxsize=32)
def keys_for(version: str) -> KeySet:
    """The keys `version` accepts. Versions before the first known one are refused (plex never
    read their structs); a newer release than the newest known gets the newest known set."""
    data = _data()
    versions: list[str] = data["versions"]
    want = _version_tuple(version)
    if want < _version_tuple(versions[0]):
        raise ValueError(
            f"zot {version} is older than {versions[0]}, the first release whose "
            "config keys plex knows"
        )
    known = [v for v in versions if _version_tuple(v) <= want]
    use = known[-1]
    patterns = set()
    for path, entry in data["keys"].items():
        if _accepted(entry, use, versions):
            patterns.add(_segments(path.lower()))
    return KeySet(use, frozenset(patterns))


def _accepted(entry: dict[str, str], version: str, versions: list[str]) -> bool:
    v = _version_tuple(version)
    if v < _version_tuple(entry["since"]):
        return False
    if "until" in entry and v >= _version_tuple(entry["until"]):
        return False
    return version not in entry.get("missing_in", "").split(",")


def _segments(path: str) -> tuple[str, ...]:
    # `a.b[].c` -> ("a", "b", "[]", "c")
    out: list[str] = []
    for part in path.split("."):
        lists = 0
        while part.endswith("[]"):
            part, lists = part[:-2], lists + 1
        if part:
            out.append(part)
        out.extend(["[]"] * lists)
    return tuple(out)


def _matches(patterns: frozenset[tuple[str, ...]], segs: tuple[str, ...]) -> bool:
    for pat in patterns:
        if len(pat) > len(segs) and pat[-1] != "**":
            continue
        ok = True
        for i, p in enumerate(pat):
            if p == "**":
                return True  # a free-form value (map[string]any): anything below is taken
            if i >= len(segs) or (p != "*" and p != segs[i]):
                ok = False
                break
        if ok and len(pat) == len(segs):
            return True
    return False


def _walk(doc: Any, pretty: str, path: str) -> Iterator[tuple[str, str]]:
    """(mapstructure-style path as zot reports it, our pattern path) for every key."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            key = str(k).lower()  # viper lowercases every key before decoding
            p = f"{pretty}.{key}" if pretty else key
            q = f"{path}.{key}" if path else key
            yield p, q
            yield from _walk(v, p, q)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _walk(v, f"{pretty}[{i}]", f"{path}[]")


def unknown_keys(doc: Any, version: str) -> list[str]:
    """The keys of `doc` that zot `version` would refuse, as zot names them. A key below an
    unknown key is not listed (zot reports the outermost one it could not use)."""
    ks = keys_for(version)
    out: list[str] = []
    bad: list[str] = []
    for pretty, path in _walk(doc, "", ""):
        if any(pretty.startswith(b + ".") or pretty.startswith(b + "[") for b in bad):
            continue
        if not ks.accepts(path):
            bad.append(pretty)
            out.append(pretty)
    return out


class UnknownZotKeys(ValueError):
    def __init__(self, version: str, keys: list[str]) -> None:
        self.version = version
        self.keys = keys
        super().__init__(
            f"zot {version} would refuse this config: {UNKNOWN_KEYS}: {', '.join(keys)}"
        )


def check_config(doc: Any, version: str) -> None:
    """Raise UnknownZotKeys when zot `version` would refuse `doc`, as `zot verify` does."""
    keys = unknown_keys(doc, version)
    if keys:
        raise UnknownZotKeys(version, keys)
