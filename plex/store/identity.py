"""Where a plex's identity is kept: `<state>/<plex>/identity/` (0700 dirs, 0600 files).

`ensure_identity` is the one side effect of identity: it loads, completes (or rotates) and
writes; what is written is computed by the pure `plex.model.identity.compute_identity`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from plex.errors import PlexError
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
from plex.store.state import plex_dir, private_dir, write_private

# nodes/<node>/node-password: what the node keeps as /etc/rancher/node/password.
NODE_PASSWORD_FILE = "node-password"  # noqa: S105 - a file name


def identity_dir(plex_name: str) -> Path:
    return plex_dir(plex_name) / "identity"


def load_identity(plex_name: str, root: Path | None = None) -> Identity | None:
    d = root or identity_dir(plex_name)
    secrets_file = d / "secrets.json"
    if not secrets_file.exists():
        return None
    try:
        data = json.loads(secrets_file.read_text())
        keys: dict[str, dict[str, HostKey]] = {}
        nodes_dir = d / "nodes"
        for node_dir in sorted(nodes_dir.iterdir()) if nodes_dir.is_dir() else []:
            keys[node_dir.name] = {
                kind: HostKey(
                    kind,
                    (node_dir / f"ssh_host_{kind}_key").read_text(),
                    (node_dir / f"ssh_host_{kind}_key.pub").read_text().strip(),
                )
                for kind in KEY_TYPES
                if (node_dir / f"ssh_host_{kind}_key").exists()
            }
        passwords = {
            node_dir.name: (node_dir / NODE_PASSWORD_FILE).read_text().strip()
            for node_dir in (sorted(nodes_dir.iterdir()) if nodes_dir.is_dir() else [])
            if (node_dir / NODE_PASSWORD_FILE).exists()
        }
        return Identity(plex_name, data["token"], data["vrrp_secret"], keys, passwords)
    except (OSError, ValueError, KeyError) as e:
        raise PlexError(
            f"{d}: identity is damaged ({e})", "restore it, or run: plex identity PLEX --rotate all"
        ) from None


def save_identity(plex: Plex, identity: Identity, root: Path | None = None) -> list[Path]:
    """Write what changed; returns the paths written (empty when nothing changed)."""
    d = private_dir(root or identity_dir(plex.name))
    written: list[Path] = []

    def put(path: Path, data: str) -> None:
        if write_private(path, data):
            written.append(path)

    put(
        d / "secrets.json",
        json.dumps({"token": identity.token, "vrrp_secret": identity.vrrp_secret}, indent=2) + "\n",
    )
    for node, keys in sorted(identity.keys.items()):
        nd = private_dir(d / "nodes" / node)
        for kind, key in keys.items():
            put(nd / f"ssh_host_{kind}_key", key.private)
            put(nd / f"ssh_host_{kind}_key.pub", key.public + "\n")
    for node, password in sorted(identity.node_passwords.items()):
        put(private_dir(d / "nodes" / node) / NODE_PASSWORD_FILE, password + "\n")
    put(d / "hosts", hosts_file(plex))
    put(d / "ssh_known_hosts", known_hosts_file(plex, identity))
    return written


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


def require_identity(plex: Plex) -> Identity:
    """The identity for bake/deploy: generated on first use, never changed by them."""
    identity, _ = ensure_identity(plex)
    return replace(identity)
