"""A plex's identity: per-node SSH host keys and node passwords, hosts, ssh_known_hosts, join
token, VRRP secret.

Computed once and kept stable. `compute_identity` is pure: given the plex, what already exists and
a key generator, it returns the identity, generating only what is missing or asked to rotate.
`ensure_identity` is the one side effect: it loads, computes and writes the state directory.

Private keys are kept as the bytes first written: re-serialising an OpenSSH key is not
byte-stable (it embeds a random check integer), and a key must never change unless rotated.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from plex.errors import LockedError, UsageError
from plex.model import topology
from plex.model.plex import Plex, Role

KEY_TYPES = ("ed25519", "rsa")
ALL = "all"
# RKE2 (k3s pkg/agent/config/config.go) keeps a node's password here and, when the file is
# missing, makes one (16 random bytes, hex, 0600). A server refuses a join under an existing
# node name with another password, so a node recreated by plex must bring the same one.
NODE_PASSWORD_PATH = "/etc/rancher/node/password"  # noqa: S105 - a path
NODE_PASSWORD_CHARS = "0123456789abcdef"  # noqa: S105 - an alphabet
NODE_PASSWORD_LENGTH = 32
STORE_PASSWORD_LENGTH = 40  # bcrypt reads at most 72 bytes
# The join token as its own drop-in: RKE2 reads config.yaml, then config.yaml.d/*.yaml in
# lexical order (docs.rke2.io install/configuration), so no image needs to hold it.
TOKEN_FILE = "/etc/rancher/rke2/config.yaml.d/00-plex-token.yaml"  # noqa: S105 - a path
# The VRRP password: the baked keepalived.conf `include`s it inside `authentication {}`
# (keepalived's parser takes `include` anywhere and refuses a missing included file).
VRRP_AUTH_FILE = "/etc/keepalived/plex-vrrp-auth.conf"


@dataclass(frozen=True)
class PrivateFile:
    """A file only its own node may hold: pushed into the stopped instance at create, never
    baked into an image, its mode checked after the push."""

    path: str
    data: bytes = field(repr=False)  # never in a log line or a traceback
    mode: int = 0o600


@dataclass(frozen=True)
class HostKey:
    kind: str  # ed25519 | rsa
    private: str  # OpenSSH PEM, as first written
    public: str  # "ssh-ed25519 AAAA... root@node"

    @property
    def fingerprint(self) -> str:
        """SHA256:... exactly as `ssh-keygen -lf` prints it."""
        blob = base64.b64decode(self.public.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

    @property
    def public_key(self) -> str:
        """The key without its comment, as sshd presents it."""
        return " ".join(self.public.split()[:2])


@dataclass(frozen=True)
class Identity:
    plex: str
    token: str
    vrrp_secret: str
    keys: dict[str, dict[str, HostKey]] = field(default_factory=dict)  # node -> kind -> key
    node_passwords: dict[str, str] = field(default_factory=dict)  # kube node -> password
    # plex's own SSH client key: its public half is root's authorized key on VM nodes (given
    # by cloud-init), its private half never leaves the identity (SSH probes log in with it).
    deploy_key: HostKey | None = None
    # The registry store's push login (registry.store.user); "" while the plex has no store.
    store_password: str = field(default="", repr=False)
    # Set (to where the vault is) when loaded without the age key: only the public half is
    # here (host and deploy public keys); asking for any secret says, in one line, it is locked.
    locked: str = ""

    def require_secrets(self) -> None:
        if self.locked:
            raise LockedError(
                f"{self.locked}: the identity is encrypted (age) and locked; this needs its "
                "secrets",
                hint="set PLEX_AGE_KEY or PLEX_AGE_KEY_FILE (public-only commands work locked)",
            )

    def host_keys(self, node: str) -> dict[str, HostKey]:
        try:
            return self.keys[node]
        except KeyError:
            raise UsageError(f"no identity for node '{node}'", "run: plex identity PLEX") from None

    def node_password(self, node: str) -> str:
        self.require_secrets()
        try:
            return self.node_passwords[node]
        except KeyError:
            raise UsageError(f"no node password for '{node}'", "run: plex identity PLEX") from None

    def private_files(self, node: str, role: Role) -> tuple[PrivateFile, ...]:
        """Everything secret that belongs on `node` (one place: deploy pushes exactly this)."""
        self.require_secrets()
        files: list[PrivateFile] = []
        for kind, key in sorted(self.host_keys(node).items()):
            path = f"/etc/ssh/ssh_host_{kind}_key"
            files.append(PrivateFile(path, key.private.encode(), 0o600))
            files.append(PrivateFile(f"{path}.pub", (key.public + "\n").encode(), 0o644))
        if role.is_kube:
            files.append(
                PrivateFile(NODE_PASSWORD_PATH, (self.node_password(node) + "\n").encode(), 0o600)
            )
            files.append(PrivateFile(TOKEN_FILE, token_dropin(self.token).encode(), 0o600))
        if role is Role.LB:
            files.append(
                PrivateFile(VRRP_AUTH_FILE, f"auth_pass {self.vrrp_secret}\n".encode(), 0o600)
            )
        return tuple(files)

    def secret_needles(self, nodes: Iterable[tuple[str, Role]]) -> Iterator[tuple[str, str]]:
        """(what, text) pairs to search for: any of them found in an image or artifact is a
        leak. The shared secrets as they are, then every line of every node's secret files
        (a private key's base64 lines one by one, so a partial copy is found too); a secret
        file added to `private_files` is covered without touching this."""
        self.require_secrets()
        yield "join token", self.token
        yield "VRRP password", self.vrrp_secret
        if self.deploy_key is not None:
            for i, line in enumerate(self.deploy_key.private.splitlines()):
                line = line.strip()
                if len(line) >= 8 and not line.startswith(("#", "-----")):
                    yield f"deploy key line {i + 1}", line
        if self.store_password:
            # Not in private_files: it goes to the registry node as a bcrypt htpasswd line.
            yield "registry store password", self.store_password
        for name, role in nodes:
            for f in self.private_files(name, role):
                if f.mode & 0o077:
                    continue  # public (.pub)
                for i, line in enumerate(f.data.decode().splitlines()):
                    line = line.strip()
                    if len(line) >= 8 and not line.startswith(("#", "-----")):
                        yield f"{name}:{f.path} line {i + 1}", line


def token_dropin(token: str) -> str:
    return (
        "# Written by plex at instance creation: the join token never enters an image.\n"
        f"token: {token}\n"
    )


class KeyGen(Protocol):
    def host_key(self, kind: str, comment: str) -> HostKey: ...
    def secret(self, length: int, alphabet: str) -> str: ...


class SystemKeyGen:
    """Real keys from `cryptography` and the OS CSPRNG."""

    def host_key(self, kind: str, comment: str) -> HostKey:
        # start-up time: only generating a key needs cryptography, not loading a plex
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if kind == "ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
        elif kind == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        else:
            raise ValueError(kind)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        return HostKey(kind, private, f"{public} {comment}")

    def secret(self, length: int, alphabet: str) -> str:
        return "".join(secrets.choice(alphabet) for _ in range(length))


def compute_identity(
    plex: Plex,
    existing: Identity | None,
    keygen: KeyGen,
    rotate: Iterable[str] = (),
) -> Identity:
    """Return the plex's identity, generating only what is missing or named in `rotate`.

    `rotate` holds node names, or `all` (every node key, node password and both secrets).
    """
    rotate = set(rotate)
    everything = ALL in rotate
    names = [n.name for n in topology.nodes(plex, reserved=True)]
    for r in rotate - {ALL}:
        if r not in names:
            raise UsageError(f"cannot rotate '{r}': plex '{plex.name}' has no such node")
    base = existing if existing is not None and not everything else None
    # RKE2 accepts any string as a token; VRRP PASS authentication uses at most 8 characters.
    token = base.token if base else keygen.secret(48, string.ascii_letters + string.digits)
    vrrp = base.vrrp_secret if base else keygen.secret(8, string.ascii_letters + string.digits)
    keys: dict[str, dict[str, HostKey]] = dict(existing.keys) if existing else {}
    for name in names:
        have = keys.get(name, {})
        if everything or name in rotate:
            have = {}
        keys[name] = {
            kind: have.get(kind) or keygen.host_key(kind, f"root@{name}") for kind in KEY_TYPES
        }
    passwords: dict[str, str] = dict(existing.node_passwords) if existing else {}
    for n in topology.nodes(plex, reserved=True):
        if not n.role.is_kube:
            continue
        if everything or n.name in rotate or n.name not in passwords:
            passwords[n.name] = keygen.secret(NODE_PASSWORD_LENGTH, NODE_PASSWORD_CHARS)
    # Last, so that adding it to an older identity changes nothing else.
    deploy = None if everything or existing is None else existing.deploy_key
    deploy = deploy or keygen.host_key("ed25519", f"plex@{plex.name}")
    store = existing.store_password if existing is not None and not everything else ""
    if not store and plex.registry.store.enabled and topology.registry_node(plex) is not None:
        store = keygen.secret(STORE_PASSWORD_LENGTH, string.ascii_letters + string.digits)
    return Identity(
        plex=plex.name,
        token=token,
        vrrp_secret=vrrp,
        keys=keys,
        node_passwords=passwords,
        deploy_key=deploy,
        store_password=store,
    )


# ---------------------------------------------------------------------------------------------
# Files derived from the identity, baked into every image.


def hosts_file(plex: Plex) -> str:
    """/etc/hosts for every node: all nodes, the API VIP name and the registry alias."""
    domain = plex.network.domain
    lines = [
        "# Written by plex; identical on every node of the plex.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    api = topology.api_name(plex)
    lines.append(f"{topology.api_address(plex)}\t{api}.{domain} {api}")
    # Every reserved node (the role's capacity): a node added within it changes no image.
    for n in topology.nodes(plex, reserved=True):
        aliases = [n.fqdn(domain), n.name]
        if n.role is Role.REGISTRY:
            aliases += [f"registry.{domain}", f"{plex.name}-registry"]
        if n.is_master:
            aliases += [f"{plex.name}-master"]
        lines.append(f"{n.address}\t{' '.join(aliases)}")
    return "\n".join(lines) + "\n"


def known_hosts_file(plex: Plex, identity: Identity) -> str:
    """ssh_known_hosts for every node: name, FQDN and address, each key type."""
    domain = plex.network.domain
    lines = ["# Written by plex from the plex's precomputed host keys."]
    for n in topology.nodes(plex, reserved=True):
        hosts = ",".join([n.name, n.fqdn(domain), n.address])
        for kind in KEY_TYPES:
            lines.append(f"{hosts} {identity.host_keys(n.name)[kind].public_key}")
    return "\n".join(lines) + "\n"
