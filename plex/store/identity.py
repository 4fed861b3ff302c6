"""Where a plex's identity is kept: `<state>/<plex>/identity/` (0700 dirs, 0600 files).

`ensure_identity` is the one side effect of identity: it loads, completes (or rotates) and
writes; what is written is computed by the pure `plex.model.identity.compute_identity`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from plex.errors import PlexError, UsageError
from plex.model import topology
from plex.model.identity import (
    KEY_TYPES,
    HostKey,
    Identity,
    KeyGen,
    SystemKeyGen,
    compute_identity,
    hosts_file,
    known_hosts_file,
)
from plex.model.plex import Plex
from plex.store import vault
from plex.store.state import plex_dir, private_dir, write_private

# nodes/<node>/node-password: what the node keeps as /etc/rancher/node/password.
NODE_PASSWORD_FILE = "node-password"  # noqa: S105 - a file name
DEPLOY_KEY = "deploy_key"  # plex's SSH client key (deploy_key.pub beside it)


def identity_dir(plex_name: str) -> Path:
    return plex_dir(plex_name) / "identity"


def load_identity(
    plex_name: str, root: Path | None = None, *, public_only: bool = False
) -> Identity | None:
    """The stored identity. `public_only`: a locked (age) identity loads as its public half
    (host and deploy public keys, `locked` set) instead of failing; any secret asked of it
    then fails in one line. Commands that never need a secret pass it."""
    d = root or identity_dir(plex_name)
    secrets_file = d / "secrets.json"
    vault_file = d / vault.VAULT
    if not secrets_file.exists() and not vault_file.exists():
        return None
    if public_only and vault_file.exists() and vault.find_key() is None:
        return _public_identity(plex_name, d)
    try:
        nodes_dir = d / "nodes"
        node_dirs = sorted(nodes_dir.iterdir()) if nodes_dir.is_dir() else []
        if vault_file.exists():
            data = json.loads(vault.unseal(vault_file))
            sealed: dict[str, dict[str, str]] = data["keys"]
            keys = {
                n: {
                    kind: HostKey(
                        kind,
                        private,
                        (nodes_dir / n / f"ssh_host_{kind}_key.pub").read_text().strip(),
                    )
                    for kind, private in kinds.items()
                }
                for n, kinds in sealed.items()
            }
            passwords: dict[str, str] = dict(data["node_passwords"])
            deploy_private = data.get("deploy_key")
        else:
            data = json.loads(secrets_file.read_text())
            keys = {
                nd.name: {
                    kind: HostKey(
                        kind,
                        (nd / f"ssh_host_{kind}_key").read_text(),
                        (nd / f"ssh_host_{kind}_key.pub").read_text().strip(),
                    )
                    for kind in KEY_TYPES
                    if (nd / f"ssh_host_{kind}_key").exists()
                }
                for nd in node_dirs
            }
            passwords = {
                nd.name: (nd / NODE_PASSWORD_FILE).read_text().strip()
                for nd in node_dirs
                if (nd / NODE_PASSWORD_FILE).exists()
            }
            plain = d / DEPLOY_KEY
            deploy_private = plain.read_text() if plain.exists() else None
        pub = d / f"{DEPLOY_KEY}.pub"
        deploy = (
            HostKey("ed25519", deploy_private, pub.read_text().strip())
            if deploy_private and pub.exists()
            else None
        )
        return Identity(
            plex_name,
            data["token"],
            data["vrrp_secret"],
            keys,
            passwords,
            deploy,
            str(data.get("store_password", "")),
        )
    except (OSError, ValueError, KeyError) as e:
        raise PlexError(
            f"{d}: identity is damaged ({e})", "restore it, or run: plex identity PLEX --rotate all"
        ) from None


def _public_identity(plex_name: str, d: Path) -> Identity:
    nodes_dir = d / "nodes"
    keys = {
        nd.name: {
            kind: HostKey(kind, "", (nd / f"ssh_host_{kind}_key.pub").read_text().strip())
            for kind in KEY_TYPES
            if (nd / f"ssh_host_{kind}_key.pub").exists()
        }
        for nd in (sorted(nodes_dir.iterdir()) if nodes_dir.is_dir() else [])
    }
    pub = d / f"{DEPLOY_KEY}.pub"
    deploy = HostKey("ed25519", "", pub.read_text().strip()) if pub.exists() else None
    return Identity(plex_name, "", "", keys, {}, deploy, locked=str(d))


def is_encrypted(plex_name: str, root: Path | None = None) -> bool:
    return ((root or identity_dir(plex_name)) / vault.VAULT).exists()


def _store_secret(identity: Identity) -> dict[str, str]:
    """The registry store's password, only once the plex has a store (older files stay as
    they were)."""
    return {"store_password": identity.store_password} if identity.store_password else {}


def _sealed_bundle(identity: Identity) -> bytes:
    return (
        json.dumps(
            {
                "token": identity.token,
                "vrrp_secret": identity.vrrp_secret,
                "keys": {
                    n: {k: key.private for k, key in sorted(kinds.items())}
                    for n, kinds in sorted(identity.keys.items())
                },
                "node_passwords": dict(sorted(identity.node_passwords.items())),
                **(
                    {"deploy_key": identity.deploy_key.private}
                    if identity.deploy_key is not None
                    else {}
                ),
                **_store_secret(identity),
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    ).encode()


def _plaintext_secrets(d: Path) -> list[Path]:
    out = [d / "secrets.json"] if (d / "secrets.json").exists() else []
    for nd in sorted((d / "nodes").iterdir()) if (d / "nodes").is_dir() else []:
        out += [
            nd / f"ssh_host_{kind}_key"
            for kind in KEY_TYPES
            if (nd / f"ssh_host_{kind}_key").exists()
        ]
        out += [nd / NODE_PASSWORD_FILE] if (nd / NODE_PASSWORD_FILE).exists() else []
    return out + ([d / DEPLOY_KEY] if (d / DEPLOY_KEY).exists() else [])


def save_identity(plex: Plex, identity: Identity, root: Path | None = None) -> list[Path]:
    """Write what changed; returns the paths written (empty when nothing changed). An
    encrypted identity stays encrypted: its secrets are resealed only when they changed."""
    d = private_dir(root or identity_dir(plex.name))
    written: list[Path] = []

    def put(path: Path, data: str | bytes) -> None:
        if write_private(path, data):
            written.append(path)

    vault_file = d / vault.VAULT
    if vault_file.exists():
        bundle = _sealed_bundle(identity)
        if vault.unseal(vault_file) != bundle:
            put(vault_file, vault.seal(bundle, vault.read_recipients(d)))
    else:
        put(
            d / "secrets.json",
            json.dumps(
                {
                    "token": identity.token,
                    "vrrp_secret": identity.vrrp_secret,
                    **_store_secret(identity),
                },
                indent=2,
            )
            + "\n",
        )
    for node, keys in sorted(identity.keys.items()):
        nd = private_dir(d / "nodes" / node)
        for kind, key in keys.items():
            if not vault_file.exists():
                put(nd / f"ssh_host_{kind}_key", key.private)
            put(nd / f"ssh_host_{kind}_key.pub", key.public + "\n")
    if not vault_file.exists():
        for node, password in sorted(identity.node_passwords.items()):
            put(private_dir(d / "nodes" / node) / NODE_PASSWORD_FILE, password + "\n")
    if identity.deploy_key is not None:
        if not vault_file.exists():
            put(d / DEPLOY_KEY, identity.deploy_key.private)
        put(d / f"{DEPLOY_KEY}.pub", identity.deploy_key.public + "\n")
    put(d / "hosts", hosts_file(plex))
    put(d / "ssh_known_hosts", known_hosts_file(plex, identity))
    return written


def encrypt_identity(plex: Plex, recipients: list[str], root: Path | None = None) -> list[Path]:
    """Seal the identity's secrets into identity.age for `recipients` and remove every
    plaintext secret file. Returns the plaintext files removed."""
    d = root or identity_dir(plex.name)
    identity = load_identity(plex.name, root)
    if identity is None:
        raise UsageError(
            f"plex '{plex.name}' has no identity yet", f"run: plex identity {plex.name}"
        )
    if (d / vault.VAULT).exists():
        raise UsageError(f"{d}: the identity is encrypted already")
    write_private(d / vault.RECIPIENTS, "".join(f"{r}\n" for r in recipients), 0o644)
    write_private(d / vault.VAULT, vault.seal(_sealed_bundle(identity), recipients))
    removed = _plaintext_secrets(d)
    for p in removed:
        p.unlink()
    return removed


def ensure_identity(
    plex: Plex,
    rotate: Iterable[str] = (),
    keygen: KeyGen | None = None,
    root: Path | None = None,
) -> tuple[Identity, list[Path]]:
    """Load, complete (or rotate) and store the plex's identity."""
    existing = load_identity(plex.name, root)
    identity = compute_identity(plex, existing, keygen or SystemKeyGen(), rotate)
    return identity, save_identity(plex, identity, root)


def require_identity(plex: Plex, *, secrets: bool = True) -> Identity:
    """The identity for bake/deploy: generated on first use, never changed by them.

    `secrets=False` (bake, plan, show: only public data): a locked identity that already has
    every node serves as its public half instead of failing."""
    if not secrets:
        public = load_identity(plex.name, public_only=True)
        if public is not None and public.locked:
            names = [n.name for n in topology.nodes(plex, reserved=True)]
            if all(len(public.keys.get(n, {})) == len(KEY_TYPES) for n in names):
                return public
            public.require_secrets()  # new nodes need keys: that needs the key
    identity, _ = ensure_identity(plex)
    return replace(identity)
