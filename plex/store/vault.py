"""The identity at rest, encrypted with age (pyrage, the age format's Rust implementation).

An encrypted identity directory keeps its secrets (join token, VRRP password, private host keys,
node passwords) in one `identity.age` sealed to the recipients in `recipients.txt`; public parts
(`*.pub`, hosts, ssh_known_hosts) stay readable. Unlocking needs the age secret key:
`PLEX_AGE_KEY` (the key itself, `AGE-SECRET-KEY-1...`), else the file named by
`PLEX_AGE_KEY_FILE`, else `$XDG_CONFIG_HOME/plex/age.key` (age-keygen's format: `#` comment
lines, then the key). Without one, anything needing a secret stops with one line.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pyrage

from plex.errors import LockedError, UsageError
from plex.store.state import write_private

VAULT = "identity.age"
RECIPIENTS = "recipients.txt"
KEY_ENV = "PLEX_AGE_KEY"
KEY_FILE_ENV = "PLEX_AGE_KEY_FILE"
_PREFIX = "AGE-SECRET-KEY-1"
UNLOCK_HINT = (
    f"set {KEY_ENV} to the age secret key, or {KEY_FILE_ENV} to its file "
    "(default $XDG_CONFIG_HOME/plex/age.key)"
)


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "plex" / "age.key"


def _key_from_text(text: str, where: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(_PREFIX):
            return line.strip()
    raise UsageError(f"{where}: no age secret key ({_PREFIX}...) in it")


def find_key() -> tuple[str, str] | None:
    """(secret key, where it came from), or None when no key is configured."""
    if os.environ.get(KEY_ENV):
        return _key_from_text(os.environ[KEY_ENV], f"${KEY_ENV}"), f"${KEY_ENV}"
    path = Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else default_key_file()
    if os.environ.get(KEY_FILE_ENV) or path.exists():
        try:
            return _key_from_text(path.read_text(), str(path)), str(path)
        except OSError as e:
            raise UsageError(f"{path}: cannot read the age key ({e.strerror})") from None
    return None


def recipient_of(key: str) -> str:
    return str(pyrage.x25519.Identity.from_str(key).to_public())


def new_key_file(path: Path) -> str:
    """A new age key in age-keygen's format (0600); returns its recipient (`age1...`)."""
    ident = pyrage.x25519.Identity.generate()
    public = str(ident.to_public())
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    write_private(path, f"# created: {now}\n# public key: {public}\n{ident}\n")
    return public


def seal(data: bytes, recipients: list[str]) -> bytes:
    return bytes(pyrage.encrypt(data, [pyrage.x25519.Recipient.from_str(r) for r in recipients]))


def unseal(vault: Path) -> bytes:
    """The vault's plaintext; LockedError (one line) without a key or with the wrong one."""
    found = find_key()
    if found is None:
        raise LockedError(
            f"{vault.parent}: the identity is encrypted (age) and locked", hint=UNLOCK_HINT
        )
    key, where = found
    try:
        return bytes(pyrage.decrypt(vault.read_bytes(), [pyrage.x25519.Identity.from_str(key)]))
    except pyrage.DecryptError:
        raise LockedError(
            f"{vault}: the age key from {where} does not open it",
            hint="use the key the identity was encrypted to",
        ) from None


def read_recipients(d: Path) -> list[str]:
    lines = (d / RECIPIENTS).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
