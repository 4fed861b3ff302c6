"""SSH to a node that runs no incus-agent (a MicroOS VM), pinning its precomputed host key.

paramiko, not the ssh CLI: the host key is checked against the identity's public key before
anything else happens, with no known_hosts file and no string handling of ssh's output. The probe
used while a VM boots is the key exchange itself: sshd answers, with exactly the host key plex
gave the node (a node up with another key is refused, not trusted on first use).
"""

from __future__ import annotations

import base64
import socket

import paramiko

from plex.errors import BackendError

KEY_CLASSES = {"ssh-ed25519": paramiko.Ed25519Key, "ssh-rsa": paramiko.RSAKey}


def _pinned(public_key: str) -> paramiko.PKey:
    kind, blob = public_key.split()[:2]
    cls = KEY_CLASSES.get(kind)
    if cls is None:
        raise ValueError(f"unsupported host key type {kind}")
    return cls(data=base64.b64decode(blob))


def host_key_probe(address: str, public_key: str, port: int = 22, timeout: float = 5.0) -> str:
    """Connect, do the key exchange offering only the pinned key's type, and check the server's
    key. Returns its fingerprint; BackendError when unreachable or when the key differs."""
    want = _pinned(public_key)
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as e:
        raise BackendError(f"ssh {address}:{port}: {e.strerror or e}") from None
    transport = paramiko.Transport(sock)
    try:
        opts = transport.get_security_options()
        # Ask for the pinned key's type only, so the server must present that key.
        opts.key_types = (
            ("rsa-sha2-512", "rsa-sha2-256") if want.get_name() == "ssh-rsa" else (want.get_name(),)
        )
        transport.start_client(timeout=timeout)
        got = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise BackendError(f"ssh {address}:{port}: {e}") from None
    finally:
        transport.close()
    if got.asbytes() != want.asbytes():
        raise BackendError(
            f"ssh {address}:{port} presented host key {got.fingerprint}, not the "
            f"node's {want.fingerprint}",
            hint="another machine has this address, or the node lost its keys",
        )
    return str(want.fingerprint)
