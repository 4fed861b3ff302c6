"""Upstream registry credentials: a YAML file kept outside git, loaded into objects that never
print a password.

The file (`registry.credentials_file` in the plex) maps upstream names to a login:

    docker.io:
      username: someone
      password: dckr_pat_...

It must be readable by its owner only (mode 0600): plex refuses anything looser rather than
warn, because a warning scrolls by and the token stays exposed. Passwords are wrapped in
`Secret`, whose repr/str/format are a fixed mask, so a password cannot leak through a log line,
an f-string, a traceback's locals or an exception message by accident; code that must write it
into a rendered file calls `Secret.reveal()`, which is easy to grep for.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from plex.errors import ConfigError, ConfigErrors
from plex.model.plex import Plex
from plex.plexfile.yamlfile import parse_yaml

MASK = "********"
FIELDS = ("username", "password")
EXAMPLE = "docker.io: {username: NAME, password: TOKEN}"


@dataclass(frozen=True)
class Secret:
    """A string that shows as a mask everywhere except through `reveal()`."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Login:
    """One upstream's username and (masked) password."""

    username: str
    password: Secret


@dataclass(frozen=True)
class Credentials:
    """Logins by upstream name, plus the file they came from (for error messages)."""

    file: str
    logins: Mapping[str, Login] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, upstream: str) -> Login | None:
        return self.logins.get(upstream)

    def __contains__(self, upstream: object) -> bool:
        return upstream in self.logins

    def __iter__(self) -> Iterator[str]:
        return iter(self.logins)

    def __len__(self) -> int:
        return len(self.logins)

    def __repr__(self) -> str:
        # Usernames are not secret, but a repr has no reason to carry them either.
        return f"Credentials(file={self.file!r}, upstreams={sorted(self.logins)!r})"

    __str__ = __repr__

    def check_upstreams(self, plex: Plex) -> None:
        """Every entry must name an upstream of the plex: a typo would silently pull anonymously."""
        known = [u.name for u in plex.registry.upstreams]
        for name in self.logins:
            if name not in known:
                raise ConfigError(
                    self.file,
                    name,
                    f"'{name}' is not an upstream of plex '{plex.name}'",
                    hint="upstreams: " + ", ".join(known),
                )


def _check_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            str(path),
            "",
            f"holds passwords but is readable by group or others (mode {mode:04o})",
            hint=f"chmod 600 {path}",
        )


def parse_credentials(text: str, file: str) -> Credentials:
    """Validate credentials YAML text. Errors name the file, line and field, never a value."""
    try:
        # The one loader: its errors carry a path and a line, never a snippet of the file.
        doc = parse_yaml(text, file)
    except ConfigErrors as e:
        raise e.errors[0] from None
    data = {} if doc.data is None else doc.data
    lines = doc.lines
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"must be a mapping of upstream names, like {EXAMPLE}", 1)
    logins: dict[str, Login] = {}
    for name, entry in data.items():
        if not isinstance(name, str):
            raise ConfigError(file, str(name), "upstream names must be strings")
        line = lines.get((name,))
        if not isinstance(entry, dict):
            raise ConfigError(file, name, f"must be a mapping like {EXAMPLE}", line)
        for key in entry:
            if key not in FIELDS:
                raise ConfigError(
                    file,
                    f"{name}.{key}",
                    "unknown key (username, password)",
                    lines.get((name, key), line),
                )
        values: dict[str, str] = {}
        for key in FIELDS:
            value = entry.get(key)
            where = lines.get((name, key), line)
            if value is None:
                raise ConfigError(file, f"{name}.{key}", "required key is missing", where)
            if not isinstance(value, str):
                # The type only: an unquoted numeric password is still a password.
                raise ConfigError(
                    file,
                    f"{name}.{key}",
                    f"must be a string (got {type(value).__name__}); quote it",
                    where,
                )
            if not value:
                raise ConfigError(file, f"{name}.{key}", "must not be empty", where)
            values[key] = value
        logins[name] = Login(values["username"], Secret(values["password"]))
    return Credentials(file, MappingProxyType(logins))


def load_credentials(path: Path | str) -> Credentials:
    """Read and validate a credentials file; refuse it unless only its owner can read it."""
    p = Path(path).expanduser()
    try:
        _check_mode(p)
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            str(p), "", "no such credentials file", hint=f"create it with mode 600: {EXAMPLE}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(p), "", f"cannot read: {e}") from None
    return parse_credentials(text, str(p))


def credentials_path(plex: Plex) -> Path | None:
    """The plex's credentials file: `~` expanded, relative paths from the plex file's folder."""
    raw = plex.registry.credentials_file
    if raw is None:
        return None
    p = Path(raw).expanduser()
    if not p.is_absolute() and plex.source:
        p = Path(plex.source).parent / p
    return p


def load_plex_credentials(plex: Plex) -> Credentials | None:
    """Load and cross-check the plex's credentials file; None when the plex names none."""
    p = credentials_path(plex)
    if p is None:
        return None
    creds = load_credentials(p)
    creds.check_upstreams(plex)
    return creds
