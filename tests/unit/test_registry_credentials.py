"""Upstream credentials: validation naming file and field, file mode, and no password leaks."""

from __future__ import annotations

import logging
import pprint
import traceback
from pathlib import Path

import pytest

from plex.errors import ConfigError
from plex.model.plex import Plex
from plex.plexfile.load import load_plex
from plex.registry.credentials import (
    Credentials,
    Secret,
    credentials_path,
    load_credentials,
    load_plex_credentials,
    parse_credentials,
)

CASES = Path(__file__).parent / "golden" / "registry" / "cases"
PASSWORD = "s3cr3t-Pa55-leakcheck"
GOOD = f"""\
docker.io:
  username: bot
  password: {PASSWORD}
quay.io: {{username: robot, password: other-{PASSWORD}}}
"""


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "creds.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(mode)
    return p


def four(tmp_path: Path, creds_file: str) -> Plex:
    text = (
        (CASES / "four.yaml")
        .read_text()
        .replace("~/.config/plex/registry-credentials.yaml", creds_file)
    )
    p = tmp_path / "four.yaml"
    p.write_text(text)
    return load_plex(p)


def test_load(tmp_path: Path) -> None:
    creds = load_credentials(write(tmp_path, GOOD))
    assert list(creds) == ["docker.io", "quay.io"]
    assert len(creds) == 2 and "docker.io" in creds and "ghcr.io" not in creds
    login = creds.get("docker.io")
    assert login is not None
    assert login.username == "bot"
    assert login.password.reveal() == PASSWORD
    assert creds.get("ghcr.io") is None


def test_empty_file_is_no_logins(tmp_path: Path) -> None:
    assert len(load_credentials(write(tmp_path, "# nothing yet\n"))) == 0


# --- never show a password --------------------------------------------------------------------


def test_repr_str_format_never_show_passwords(tmp_path: Path) -> None:
    creds = load_credentials(write(tmp_path, GOOD))
    login = creds.get("docker.io")
    assert login is not None
    shown = [
        repr(creds),
        str(creds),
        f"{creds}",
        f"{creds!r}",
        " ".join(map(str, [creds])),
        repr(login),
        str(login),
        f"{login}",
        repr(login.password),
        str(login.password),
        f"{login.password}",
        f"{login.password:>30}",
        f"{login.password!r}",
        " ".join(map(str, [login.password])),
        pprint.pformat(dict(creds.logins)),
        repr(list(creds.logins.values())),
    ]
    for text in shown:
        assert PASSWORD not in text, text
    assert "********" in str(login.password)
    assert "docker.io" in repr(creds)  # still useful to read


def test_logging_never_shows_passwords(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    creds = load_credentials(write(tmp_path, GOOD))
    log = logging.getLogger("plex.test")
    with caplog.at_level(logging.DEBUG):
        log.debug("creds %s %r", creds, creds)
        log.info("login %s", creds.get("docker.io"))
        log.warning("logins %s", dict(creds.logins))
    assert caplog.records
    assert PASSWORD not in caplog.text


def test_exceptions_never_show_passwords(tmp_path: Path) -> None:
    creds = load_credentials(write(tmp_path, GOOD))
    try:
        raise ValueError("bad login", creds.get("docker.io"))
    except ValueError as e:
        text = "".join(traceback.format_exception(e))
    assert PASSWORD not in text
    assert "bad login" in text


@pytest.mark.parametrize(
    "text, field",
    [
        (
            f"docker.io: {{username: bot, password: {PASSWORD}, token: {PASSWORD}}}\n",
            "docker.io.token",
        ),
        ("docker.io: {username: bot, password: 31415926535}\n", "docker.io.password"),
        (f"docker.io: {{username: bot, pasword: {PASSWORD}}}\n", "docker.io.pasword"),
        (f"docker.io: {{username: bot, password: {PASSWORD}}}\nquay.io: [{PASSWORD}]\n", "quay.io"),
    ],
)
def test_validation_errors_name_the_field_not_the_value(
    tmp_path: Path, text: str, field: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_credentials(p)
    assert e.value.file == str(p)
    assert e.value.path == field
    assert PASSWORD not in str(e.value) and "31415926535" not in str(e.value)
    assert PASSWORD not in repr(e.value)


def test_yaml_error_shows_no_snippet(tmp_path: Path) -> None:
    p = write(tmp_path, f"docker.io:\n  username: bot\n  password: {PASSWORD}\n   bad: [\n")
    with pytest.raises(ConfigError, match="invalid YAML") as e:
        load_credentials(p)
    assert PASSWORD not in str(e.value)
    assert e.value.line is not None


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, problem",
    [
        ("- docker.io\n", "", "must be a mapping of upstream names"),
        ("docker.io: bot\n", "docker.io", "must be a mapping"),
        ("docker.io: {username: bot}\n", "docker.io.password", "required key is missing"),
        ("docker.io: {password: x}\n", "docker.io.username", "required key is missing"),
        ("docker.io: {username: '', password: x}\n", "docker.io.username", "must not be empty"),
        ("docker.io: {username: 7, password: x}\n", "docker.io.username", "must be a string"),
        ("1: {username: a, password: x}\n", "1", "must be strings"),
    ],
)
def test_validation(text: str, path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_credentials(text, "c.yaml")
    assert e.value.path == path
    assert problem in e.value.problem
    assert str(e.value).startswith("c.yaml")


def test_error_line_numbers() -> None:
    text = "docker.io: {username: a, password: b}\nquay.io:\n  username: a\n  extra: 1\n"
    with pytest.raises(ConfigError) as e:
        parse_credentials(text, "c.yaml")
    assert (e.value.path, e.value.line) == ("quay.io.extra", 4)
    assert str(e.value).startswith("c.yaml:4: quay.io.extra:")


# --- file mode --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_refuses_files_others_can_read(tmp_path: Path, mode: int) -> None:
    p = write(tmp_path, GOOD, mode)
    with pytest.raises(ConfigError, match="readable by group or others") as e:
        load_credentials(p)
    assert e.value.hint == f"chmod 600 {p}"
    assert e.value.file == str(p)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_accepts_owner_only(tmp_path: Path, mode: int) -> None:
    assert len(load_credentials(write(tmp_path, GOOD, mode))) == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such credentials file") as e:
        load_credentials(tmp_path / "nope.yaml")
    assert e.value.hint is not None and "600" in e.value.hint


# --- plex side --------------------------------------------------------------------------------


def test_plex_credentials_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert credentials_path(four(tmp_path, "~/c.yaml")) == tmp_path / "home" / "c.yaml"
    assert credentials_path(four(tmp_path, "sub/c.yaml")) == tmp_path / "sub" / "c.yaml"
    assert credentials_path(four(tmp_path, "/abs/c.yaml")) == Path("/abs/c.yaml")
    assert credentials_path(load_plex(CASES / "one.yaml")) is None
    assert load_plex_credentials(load_plex(CASES / "one.yaml")) is None


def test_load_plex_credentials_checks_upstream_names(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    creds = load_plex_credentials(four(tmp_path, "creds.yaml"))
    assert isinstance(creds, Credentials) and len(creds) == 2
    write(tmp_path, GOOD + "gcr.io: {username: a, password: b}\n")
    with pytest.raises(ConfigError, match=r"'gcr\.io' is not an upstream of plex 'four'") as e:
        load_plex_credentials(four(tmp_path, "creds.yaml"))
    assert e.value.path == "gcr.io"


def test_secret_compares_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")
