"""Which release artifacts a bake installs: RKE2 for the nodes, the Zot binary for the registry.

`rke2_release`/`zot_release` describe a release as data (version, asset URLs, where each asset's
checksum comes from) so a recipe digest can include it; `fetch_rke2`/`fetch_zot` hand back the
verified files. The only I/O is through plex.store.downloads (channel resolution and fetches).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from plex.errors import DownloadError
from plex.model.plex import KubernetesConfig, ZotConfig
from plex.store import downloads

RKE2_TARBALL = "rke2.linux-amd64.tar.gz"
RKE2_CHECKSUMS = "sha256sum-amd64.txt"
RKE2_IMAGES = "rke2-images.linux-amd64.tar.zst"
RKE2_IMAGE_LIST = "rke2-images.linux-amd64.txt"
DEFAULT_CHANNEL = "stable"
ZOT_CHECKSUMS = "checksums.sha256.txt"

_RKE2_VERSION = re.compile(r"v\d+\.\d+\.\d+\+rke2r\d+")


@dataclass(frozen=True)
class Asset:
    """One downloadable file and where its expected sha256 comes from (exactly one is set)."""

    name: str
    url: str
    sha256: str | None = None
    checksum_url: str | None = None
    optional: bool = False

    def fetch(self, cache: Path | None = None) -> downloads.Downloaded:
        return downloads.fetch(
            self.url,
            sha256=self.sha256,
            checksum_url=self.checksum_url,
            checksum_name=self.name,
            cache=cache,
        )


@dataclass(frozen=True)
class Release:
    product: str
    version: str
    assets: tuple[Asset, ...]

    def asset(self, name: str) -> Asset:
        for a in self.assets:
            if a.name == name:
                return a
        raise KeyError(f"{self.product} {self.version} has no asset {name}")

    def digest_input(self) -> dict[str, object]:
        """What a recipe digest should include: a new checksum source means a new image."""
        return {
            "product": self.product,
            "version": self.version,
            "assets": [
                {"name": a.name, "url": a.url, "sha256": a.sha256, "checksum_url": a.checksum_url}
                for a in self.assets
                if not a.optional
            ],
        }


def rke2_release_url(release_url: str, version: str, name: str) -> str:
    # GitHub tags contain '+', which must be escaped in the path (v1.31.4%2Brke2r1).
    if release_url.startswith("/"):
        # A local directory laid out like the release page: <dir>/<version>/<asset>.
        release_url = Path(release_url).as_uri()
    return f"{release_url.rstrip('/')}/{urllib.parse.quote(version, safe='')}/{name}"


def rke2_release(kube: KubernetesConfig, *, cache: Path | None = None) -> Release:
    version = kube.version or resolve_rke2_channel(
        kube.channel_url, kube.channel or DEFAULT_CHANNEL, cache=cache
    )
    checksums = rke2_release_url(kube.release_url, version, RKE2_CHECKSUMS)

    def asset(name: str, *, optional: bool = False) -> Asset:
        url = rke2_release_url(kube.release_url, version, name)
        return Asset(name, url, checksum_url=checksums, optional=optional)

    return Release(
        product="rke2",
        version=version,
        assets=(
            asset(RKE2_TARBALL),
            # Airgap images: only needed where nodes cannot pull the system images.
            asset(RKE2_IMAGES, optional=True),
            asset(RKE2_IMAGE_LIST, optional=True),
        ),
    )


def resolve_rke2_channel(channel_url: str, channel: str, *, cache: Path | None = None) -> str:
    """The version a channel points to: update.rke2.io redirects to `.../releases/tag/<tag>`."""
    url = f"{channel_url.rstrip('/')}/{urllib.parse.quote(channel, safe='')}"
    location = downloads.redirect_target(url, cache=cache)
    tag = urllib.parse.unquote(urllib.parse.urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1])
    if not _RKE2_VERSION.fullmatch(tag):
        raise DownloadError(
            f"{url} redirected to {location}, which does not end in an RKE2 version",
            hint="check kubernetes.channel, or pin kubernetes.version",
        )
    return tag


def fetch_rke2(kube: KubernetesConfig, *, cache: Path | None = None) -> Path:
    """The verified `rke2.linux-amd64.tar.gz` for the configured version or channel."""
    return rke2_release(kube, cache=cache).asset(RKE2_TARBALL).fetch(cache).path


def zot_checksums_url(binary_url: str) -> str:
    """Zot releases publish one `checksums.sha256.txt` beside the binaries, `<sha256> *<file>`
    per asset (project-zot/zot .github/workflows/build.yaml); there is no per-binary .sha256."""
    return urllib.parse.urljoin(binary_url, ZOT_CHECKSUMS)


def zot_release(zot: ZotConfig) -> Release:
    url = zot.url.replace("{version}", zot.version)
    name = Path(urllib.parse.urlsplit(url).path).name
    if zot.sha256:
        binary = Asset(name, url, sha256=zot.sha256)
    else:
        binary = Asset(name, url, checksum_url=zot_checksums_url(url))
    return Release(product="zot", version=zot.version, assets=(binary,))


def fetch_zot(zot: ZotConfig, *, cache: Path | None = None) -> Path:
    """The verified Zot binary (sha256 from the config, else the release's checksums file)."""
    return zot_release(zot).assets[0].fetch(cache).path
