"""The identity at rest, encrypted with age: sealed, locked without the key, one line saying so,
unlocked by PLEX_AGE_KEY or a key file, stable on re-runs, resealed on rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from plex.__main__ import main
from plex.bake.secret_scan import scan
from plex.errors import LockedError
from plex.model import topology
from plex.plexfile.load import load_plex
from plex.store import vault
from plex.store.identity import encrypt_identity, ensure_identity, identity_dir, load_identity

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PLEX_HOME", str(REPO))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in (vault.KEY_ENV, vault.KEY_FILE_ENV):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def all_bytes(d: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()]


def test_encrypted_identity_holds_no_plaintext_secret_and_is_locked_without_the_key(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plex = load_plex(REPO / "plexes" / "demo.yaml")
    assert main(["identity", "demo"]) == 0
    before = load_identity("demo")
    assert before is not None
    assert main(["identity", "demo", "--encrypt"]) == 0
    out = capsys.readouterr().err + capsys.readouterr().out
    key_file = env / "config" / "plex" / "age.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    d = identity_dir("demo")
    assert (d / vault.VAULT).exists() and not (d / "secrets.json").exists()
    nodes = [(n.name, n.role) for n in topology.nodes(plex, reserved=True)]
    needles = list(before.secret_needles(nodes))
    assert scan(all_bytes(d), needles) == []  # nothing secret left in plaintext
    assert (d / "nodes" / "demo-lb1" / "ssh_host_ed25519_key.pub").exists()  # public stays
    del out

    # The default key file unlocks it: the same identity, and re-running changes nothing.
    assert load_identity("demo") == before
    _, written = ensure_identity(plex)
    assert written == []

    # No key anywhere: one line, exit 6, for a command that needs the secrets.
    key_file.rename(env / "elsewhere.key")
    with pytest.raises(LockedError, match="the identity is encrypted \\(age\\) and locked"):
        load_identity("demo")
    capsys.readouterr()
    assert main(["identity", "demo"]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert "encrypted (age) and locked" in err[0] and "PLEX_AGE_KEY" in "\n".join(err)

    # PLEX_AGE_KEY_FILE, or the key itself in PLEX_AGE_KEY.
    monkeypatch.setenv(vault.KEY_FILE_ENV, str(env / "elsewhere.key"))
    assert load_identity("demo") == before
    monkeypatch.delenv(vault.KEY_FILE_ENV)
    key = vault._key_from_text((env / "elsewhere.key").read_text(), "key")
    monkeypatch.setenv(vault.KEY_ENV, key)
    assert load_identity("demo") == before

    # A wrong key is refused, also in one line.
    other = vault.new_key_file(env / "other.key")
    assert other.startswith("age1")
    monkeypatch.setenv(vault.KEY_ENV, (env / "other.key").read_text())
    with pytest.raises(LockedError, match="does not open it"):
        load_identity("demo")

    # Rotation reseals: new secrets, still no plaintext.
    monkeypatch.setenv(vault.KEY_ENV, key)
    rotated, written = ensure_identity(plex, rotate=["all"])
    assert d / vault.VAULT in written and rotated.token != before.token
    assert load_identity("demo") == rotated
    assert scan(all_bytes(d), list(rotated.secret_needles(nodes))) == []


def test_encrypting_twice_or_without_an_identity_is_a_usage_error(env: Path) -> None:
    plex = load_plex(REPO / "plexes" / "demo.yaml")
    with pytest.raises(Exception, match="has no identity yet"):
        encrypt_identity(plex, ["age1x"])
    ensure_identity(plex)
    recipient = vault.new_key_file(vault.default_key_file())
    encrypt_identity(plex, [recipient])
    with pytest.raises(Exception, match="encrypted already"):
        encrypt_identity(plex, [recipient])
