"""Extra trusted certificate authorities (`tls.ca_files`): a private registry or upstream with
its own CA, or a TLS-inspecting proxy between the nodes and the internet.

The files are read at validate and bake time (never at deploy: the certificates are public and
baked into the registry and kube images). Each CA goes into the node's system trust store
(Debian: /usr/local/share/ca-certificates/*.crt, then update-ca-certificates), which Go
programs such as docker-registry and Zot read, and into one bundle that containerd is pointed
at through RKE2's registries.yaml (`configs.<host>.tls.ca_file`) and hosts.toml (`ca`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plex.model.plex import Plex

if TYPE_CHECKING:  # start-up time: x509 loads only when a plex names CA files
    from cryptography import x509

# Debian's update-ca-certificates picks up *.crt below this directory.
TRUST_DIR = "/usr/local/share/ca-certificates/plex"
# The same certificates in one PEM file, for containerd's `ca` / registries.yaml `ca_file`.
BUNDLE = "/etc/plex/tls/ca-bundle.pem"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True)
class CaCert:
    file: str  # name inside TRUST_DIR
    pem: str  # the certificate(s), PEM, ending in a newline
    subject: str


def ca_path(plex: Plex, written: str) -> Path:
    """A `tls.ca_files` entry as a path: relative entries are relative to the plex file."""
    p = Path(written).expanduser()
    if p.is_absolute():
        return p
    source = Path(plex.source) if plex.source else None
    base = source.parent if source is not None and source.is_file() else Path.cwd()
    return base / p


def _read(path: Path) -> tuple[str, list[x509.Certificate]]:
    """The PEM text of every certificate in `path`, or ValueError saying why not."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    blocks = _PEM_BLOCK.findall(raw)
    if not blocks:
        raise ValueError(f"{path}: not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:
        from cryptography import x509

        certs = [c for b in blocks for c in x509.load_pem_x509_certificates(b)]
    except ValueError as e:
        raise ValueError(f"{path}: not a valid PEM certificate ({e})") from None
    return "".join(b.decode("ascii") + "\n" for b in blocks), certs


def check_ca_files(plex: Plex) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path, problem) for every `tls.ca_files` entry that is missing or not PEM."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, written in enumerate(plex.tls.ca_files):
        try:
            _read(ca_path(plex, written))
        except ValueError as e:
            problems.append((("tls", "ca_files", i), str(e)))
    return problems


def ca_certs(plex: Plex) -> list[CaCert]:
    """The plex's extra CAs as files for the trust store (ValueError for a bad file)."""
    out = []
    for i, written in enumerate(plex.tls.ca_files):
        path = ca_path(plex, written)
        pem, certs = _read(path)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem) or "ca"
        out.append(CaCert(f"{i:02d}-{stem}.crt", pem, certs[0].subject.rfc4514_string()))
    return out


def bundle(certs: list[CaCert]) -> str:
    return "".join(c.pem for c in certs)
