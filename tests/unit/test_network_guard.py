"""The unit tests' network guard (tests/unit/conftest.py) refuses what it must: a connect beyond
loopback and a lookup of a name that is not local; loopback still works."""

from __future__ import annotations

import errno
import socket

import pytest


def test_a_connect_beyond_loopback_is_refused_and_recorded(network_attempts: list[str]) -> None:
    with pytest.raises(OSError) as refused:
        socket.create_connection(("10.77.0.1", 9), timeout=1)
    assert refused.value.errno == errno.ENETUNREACH
    assert network_attempts == ["connect to 10.77.0.1:9"]
    network_attempts.clear()  # the guard would fail this test otherwise: that is its job


def test_a_lookup_of_a_remote_name_is_refused(network_attempts: list[str]) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("github.com", 443)
    assert network_attempts == ["lookup of github.com"]
    network_attempts.clear()


def test_loopback_still_works() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    assert socket.getaddrinfo("localhost", 80)
