"""The SSH host-key probe against a real SSH server (paramiko's server side, on loopback) that
presents a node's precomputed key, another key, or nothing at all."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest

from plex.backends.ssh import host_key_probe
from plex.errors import BackendError
from plex.model.identity import HostKey, SystemKeyGen


class _Server(paramiko.ServerInterface):  # type: ignore[misc]
    pass


def serve(private_pems: list[str]) -> tuple[int, threading.Thread]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def run() -> None:
        conn, _ = listener.accept()
        t = paramiko.Transport(conn)
        for pem in private_pems:
            cls = paramiko.Ed25519Key if "ed25519" in pem or len(pem) < 600 else paramiko.RSAKey
            t.add_server_key(cls.from_private_key(io.StringIO(pem)))
        # A client that refuses the key hangs up mid-handshake (a reset): what the refusal
        # tests expect, not a failure of the server.
        with contextlib.suppress(paramiko.SSHException, EOFError, ConnectionResetError):
            t.start_server(server=_Server())
        t.join(5)
        t.close()
        listener.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return port, th


@pytest.fixture(scope="module")
def keys() -> Iterator[dict[str, HostKey]]:
    gen = SystemKeyGen()
    yield {
        "ed": gen.host_key("ed25519", "root@n1"),
        "rsa": gen.host_key("rsa", "root@n1"),
        "other": gen.host_key("ed25519", "root@other"),
    }


def test_the_nodes_own_key_passes(keys: dict[str, HostKey]) -> None:
    ed, rsa = keys["ed"], keys["rsa"]
    port, th = serve([ed.private, rsa.private])
    assert host_key_probe("127.0.0.1", ed.public_key, port).startswith("SHA256:")
    th.join(5)
    port, th = serve([ed.private, rsa.private])
    host_key_probe("127.0.0.1", rsa.public_key, port)  # the RSA key is pinned just as well
    th.join(5)


def test_another_key_is_refused(keys: dict[str, HostKey]) -> None:
    port, th = serve([keys["other"].private])
    with pytest.raises(BackendError, match=r"presented host key .* not the node's"):
        host_key_probe("127.0.0.1", keys["ed"].public_key, port)
    th.join(5)


def test_nobody_listening_is_a_backend_error(keys: dict[str, HostKey]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(BackendError, match=f"ssh 127.0.0.1:{port}"):
        host_key_probe("127.0.0.1", keys["ed"].public_key, port, timeout=1)
