"""SSH to a node that runs no incus-agent (a MicroOS VM), pinning its precomputed host key.

paramiko, not the ssh CLI: the host key is checked against the identity's public key before
anything else happens, with no known_hosts file and no string handling of ssh's output. The probe
used while a VM boots is the key exchange itself: sshd answers, with exactly the host key plex
gave the node (a node up with another key is refused, not trusted on first use).
"""

from __future__ import annotations

import base64
import io
import shlex
import socket
from dataclasses import dataclass, field

import paramiko

from plex.backends.incus.protocol import ExecResult
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
    transport = _pinned_transport(address, public_key, port, timeout)
    fingerprint = str(_pinned(public_key).fingerprint)
    transport.close()
    return fingerprint


def _pinned_transport(
    address: str, public_key: str, port: int, timeout: float
) -> paramiko.Transport:
    """An SSH transport whose server presented exactly `public_key` (not yet authenticated)."""
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
        transport.close()
        raise BackendError(f"ssh {address}:{port}: {e}") from None
    if got.asbytes() != want.asbytes():
        transport.close()
        raise BackendError(
            f"ssh {address}:{port} presented host key {got.fingerprint}, not the "
            f"node's {want.fingerprint}",
            hint="another machine has this address, or the node lost its keys",
        )
    return transport


@dataclass(frozen=True)
class SshTarget:
    address: str
    host_key: str  # the node's precomputed public host key ("ssh-ed25519 AAAA...")
    port: int = 22


@dataclass
class SshExecutor:
    """Runs commands on nodes as root over SSH: the host key pinned, the plex's deploy key as
    the only credential. The `exec` of the Incus backend, for nodes without incus-agent, so
    the role's probes (deploy/probes.yaml) run there unchanged."""

    targets: dict[str, SshTarget]
    client_key: str = field(repr=False)  # OpenSSH PEM of the deploy key
    timeout: float = 10.0
    user: str = "root"
    _open: dict[str, paramiko.Transport] = field(default_factory=dict, repr=False)

    def _transport(self, name: str) -> paramiko.Transport:
        have = self._open.get(name)
        if have is not None and have.is_active():
            return have
        t = self.targets.get(name)
        if t is None:
            raise BackendError(f"ssh: no address for node {name}")
        transport = _pinned_transport(t.address, t.host_key, t.port, self.timeout)
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(self.client_key))
        try:
            transport.auth_publickey(self.user, key)
        except paramiko.AuthenticationException:
            transport.close()
            raise BackendError(
                f"ssh {self.user}@{t.address}:{t.port} ({name}): the plex's deploy key was refused",
                hint="the node did not get its authorized key (cloud-init user-data)",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            transport.close()
            raise BackendError(f"ssh {t.address}:{t.port} ({name}): {e}") from None
        self._open[name] = transport
        return transport

    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult:
        transport = self._transport(name)
        # sshd passes only AcceptEnv variables: the environment goes on the command line.
        prefix = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items()))] if env else []
        try:
            chan = transport.open_session(timeout=self.timeout)
            chan.exec_command(shlex.join([*prefix, *argv]))
            out, err = chan.makefile("rb"), chan.makefile_stderr("rb")
            stdout, stderr = out.read(), err.read()
            code = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._open.pop(name, None)
            raise BackendError(f"ssh {name}: {e}") from None
        return ExecResult(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def close(self) -> None:
        for transport in self._open.values():
            transport.close()
        self._open.clear()
