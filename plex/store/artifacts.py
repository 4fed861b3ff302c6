"""Release artifacts named in recipes (`rke2`, `zot`): resolved to verified local files.

Resolution fetches through plex.store.downloads (checksum-verified, cached), so a recipe digest
always covers the artifact's real sha256, and a no-op bake with a warm cache needs no network.
"""

from __future__ import annotations

from pathlib import Path

from plex.bake.recipe import ResolvedArtifact
from plex.errors import ConfigError, ConfigErrors
from plex.model.plex import Plex
from plex.store import releases

KNOWN = ("rke2", "rke2-images", "zot")


def _release(plex: Plex, name: str) -> tuple[releases.Release, releases.Asset]:
    if name == "rke2":
        rel = releases.rke2_release(plex.kubernetes)
        return rel, rel.asset(releases.RKE2_TARBALL)
    if name == "rke2-images":
        # The airgap image tarball of the same release, verified from the same checksum file.
        rel = releases.rke2_release(plex.kubernetes)
        return rel, rel.asset(releases.RKE2_IMAGES)
    if name == "zot":
        rel = releases.zot_release(plex.registry.zot)
        return rel, rel.assets[0]
    raise ConfigErrors(
        [
            ConfigError(
                "bake/", "artifacts", f"unknown artifact '{name}' (known: {', '.join(KNOWN)})"
            )
        ]
    )


def resolve(plex: Plex, name: str) -> ResolvedArtifact:
    rel, asset = _release(plex, name)
    got = asset.fetch()
    return ResolvedArtifact(
        name=name, url=asset.url, sha256=got.sha256, filename=asset.name, version=rel.version
    )


def local_path(plex: Plex, name: str) -> Path:
    """The verified file (already in the download cache after resolve())."""
    _, asset = _release(plex, name)
    return asset.fetch().path
