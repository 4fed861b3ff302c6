"""Bootstrap manifests: files the cluster applies itself, from RKE2's auto-deploy directory.

A plex may name a directory of Kubernetes manifests (`bootstrap.manifests`, e.g. Flux's install
plus its GitRepository and Kustomization); plex writes them, and the kured manifest when kured
is on, into `/var/lib/rancher/rke2/server/manifests/` of every server when it is created. RKE2's
deploy controller (k3s pkg/deploy/controller.go) applies that directory itself: every 15 s, in
sorted path order, files ending .json/.yaml/.yml that are not dotfiles and have no `<name>.skip`
beside them; each file becomes an Addon named after its base name up to the first dot, and each
YAML document must be an object with apiVersion and kind. plex checks the same rules before a
deploy so a bad file fails here, naming it, and not silently in the cluster.

Reading the directory is the only I/O: like role profiles, it is read when specs are made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from plex.errors import ConfigError
from plex.model.plex import Plex

MANIFESTS_DIR = "/var/lib/rancher/rke2/server/manifests"
EXTENSIONS = (".yaml", ".yml", ".json")
# Manifest names a user file may not take, and whose they are.
RESERVED_PREFIXES = {
    # RKE2 writes its packaged charts here at start (rke2-canal.yaml, rke2-coredns.yaml, ...):
    # a user file with such a name would be overwritten, or would replace RKE2's own.
    "rke2-": "RKE2 uses for its own packaged manifests",
    # plex's own manifests (plex.deploy.kured).
    "plex-": "plex uses for its own manifests (kured)",
}


@dataclass(frozen=True)
class Manifest:
    name: str  # file name in the manifests directory
    data: bytes

    @property
    def path(self) -> str:
        return f"{MANIFESTS_DIR}/{self.name}"

    @property
    def addon(self) -> str:
        """The Addon the deploy controller makes of it: the base name up to the first dot."""
        return self.name.split(".", 1)[0]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def manifests_dir(plex: Plex) -> Path | None:
    if not plex.bootstrap.manifests:
        return None
    d = Path(plex.bootstrap.manifests).expanduser()
    if not d.is_absolute():
        d = Path(plex.source).parent / d
    return d


def _check_documents(file: str, text: str) -> None:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(
            file,
            "",
            f"invalid YAML: {getattr(e, 'problem', None) or e}",
            mark.line + 1 if mark else None,
        ) from None
    for i, doc in enumerate(docs, 1):
        if doc is None:
            continue  # an empty document (comments, ---) is skipped, as RKE2 does
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise ConfigError(
                file, "", f"document {i} is not a Kubernetes object (needs apiVersion and kind)"
            )


def load_manifests(plex: Plex, extra: list[Manifest] | None = None) -> list[Manifest]:
    """The user's manifests (checked) and `extra` (plex's own: kured), in the order RKE2
    applies them."""
    out: list[Manifest] = []
    d = manifests_dir(plex)
    if d is not None:
        if not d.is_dir():
            raise ConfigError(plex.source, "bootstrap.manifests", f"{d} is not a directory")
        files = sorted(p for p in d.iterdir() if p.is_file())
        skips = {p.name.removesuffix(".skip") for p in files if p.name.endswith(".skip")}
        for p in files:
            if p.name.startswith(".") or p.suffix not in EXTENSIONS or p.name in skips:
                continue
            for prefix, whose in RESERVED_PREFIXES.items():
                if p.name.startswith(prefix):
                    raise ConfigError(
                        str(p), "", f"'{p.name}' starts with '{prefix}', which {whose}; rename it"
                    )
            data = p.read_bytes()
            _check_documents(str(p), data.decode("utf-8", errors="replace"))
            out.append(Manifest(p.name, data))
    out += extra or []
    seen: dict[str, str] = {}
    for m in out:
        if m.addon in seen:
            raise ConfigError(
                plex.source,
                "bootstrap.manifests",
                f"'{m.name}' and '{seen[m.addon]}' would be the same RKE2 Addon "
                f"'{m.addon}' (named up to the first dot); rename one",
            )
        seen[m.addon] = m.name
    return sorted(out, key=lambda m: m.name)


def digest(manifests: list[Manifest]) -> str:
    h = hashlib.sha256()
    for m in manifests:
        h.update(f"{m.name}\0{m.sha256}\0".encode())
    return h.hexdigest()
