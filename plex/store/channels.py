"""Channels of package layers: what the staging plex's nightly proved good, for every plex.

A package layer (base + packages + release artifacts + package commands) changes when someone
edits a role recipe. The nightly bakes the staging plex with the newest recipes (`latest`) and,
once that plex deployed and passed its smoke checks, records each package layer it used as
`stable`. Every other bake builds its plex layer on the `stable` package layer of the same
lineage by default, so an untested package change reaches only the staging plex first
(`plex bake --channel latest` opts out).

A lineage is what a plex chooses for a role's package layer and a recipe edit does not change:
the role, the base image and the exact release artifacts (name, version, checksum). Two plexes
on another RKE2 version are different lineages: a stable layer is never swapped under a plex
that asked for different software.

The record keeps the whole package layer (not just its digest), so any project on this host can
rebuild or import it: the cached rootfs `cache_root()/layers/<digest>.tar` if it is still there,
else mmdebstrap from the recorded inputs. `<state>/channels.json`, written atomically; pure
apart from load/save.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from plex.bake.recipe import (
    BaseImage,
    PackageLayer,
    Recipe,
    ResolvedArtifact,
    RoleRecipe,
    digest_of,
    render_files,
)
from plex.bake.render import Renderer
from plex.errors import PlexError
from plex.model.plex import Role
from plex.model.record import record_json
from plex.store.state import state_root, write_private

CHANNELS_VERSION = 1
# Only host-built package layers are shared images; VM images are built whole by Packer.
LAYERED_KINDS = ("mmdebstrap",)


class Channel(StrEnum):
    STABLE = "stable"  # what the last passing nightly promoted
    LATEST = "latest"  # what the recipes say now


def lineage_key(role: Role | str, layer: PackageLayer) -> str:
    """`<role>/<base>/<artifacts12>`: the package layers that may stand in for each other."""
    chosen = [
        {"name": a.name, "version": a.version, "sha256": a.sha256} for a, _ in layer.artifacts
    ]
    return f"{role}/{layer.base.name}/{digest_of(chosen)[:12]}"


def layer_to_json(layer: PackageLayer) -> dict[str, Any]:
    """Everything needed to rebuild the layer (its digest inputs plus artifact URLs)."""
    return {
        "base": {
            "name": layer.base.name,
            "kind": layer.base.kind,
            "family": layer.base.family,
            "data": dict(layer.base.data),
        },
        "packages": list(layer.packages),
        "artifacts": [
            {
                "name": a.name,
                "url": a.url,
                "sha256": a.sha256,
                "filename": a.filename,
                "version": a.version,
                "install": list(cmds),
            }
            for a, cmds in layer.artifacts
        ],
        "commands": list(layer.commands),
    }


def layer_from_json(data: dict[str, Any], digest: str, where: str) -> PackageLayer:
    """The recorded layer, checked against its recorded digest."""
    try:
        b = data["base"]
        layer = PackageLayer(
            base=BaseImage(str(b["name"]), str(b["kind"]), str(b["family"]), dict(b["data"])),
            packages=tuple(str(p) for p in data["packages"]),
            artifacts=tuple(
                (
                    ResolvedArtifact(
                        str(a["name"]),
                        str(a["url"]),
                        str(a["sha256"]),
                        str(a["filename"]),
                        str(a["version"]),
                    ),
                    tuple(str(c) for c in a["install"]),
                )
                for a in data["artifacts"]
            ),
            commands=tuple(str(c) for c in data["commands"]),
        )
    except (KeyError, TypeError) as e:
        raise PlexError(
            f"{where}: package layer record is incomplete ({e})",
            hint="re-run the nightly to promote a fresh one",
        ) from None
    if layer.digest != digest:
        raise PlexError(
            f"{where}: recorded package layer hashes to {layer.digest[:12]}, not {digest[:12]}",
            hint="the recipe format changed; re-run the nightly to promote again",
        )
    return layer


@dataclass(frozen=True)
class LayerRecord:
    key: str
    package_digest: str
    layer: dict[str, Any]
    promoted_at: float
    plex: str  # the staging plex that proved it
    run: str  # its nightly run id

    def package_layer(self, where: str = "channels.json") -> PackageLayer:
        return layer_from_json(self.layer, self.package_digest, f"{where}: {self.key}")

    def to_json(self) -> dict[str, Any]:
        return record_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerRecord:
        return cls(
            str(data["key"]),
            str(data["package_digest"]),
            dict(data["layer"]),
            float(data["promoted_at"]),
            str(data["plex"]),
            str(data["run"]),
        )


def record_for(
    role: Role | str, layer: PackageLayer, plex: str, run: str, now: float | None = None
) -> LayerRecord:
    return LayerRecord(
        lineage_key(role, layer),
        layer.digest,
        layer_to_json(layer),
        round(time.time() if now is None else now, 3),
        plex,
        run,
    )


@dataclass(frozen=True)
class Channels:
    records: dict[str, dict[str, LayerRecord]] = field(default_factory=dict)  # chan -> key -> rec

    def get(self, channel: Channel | str, key: str) -> LayerRecord | None:
        return self.records.get(str(channel), {}).get(key)

    def promote(self, channel: Channel | str, recs: list[LayerRecord]) -> Channels:
        out = {c: dict(m) for c, m in self.records.items()}
        for r in recs:
            out.setdefault(str(channel), {})[r.key] = r
        return replace(self, records=out)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CHANNELS_VERSION,
            "channels": {
                c: {k: r.to_json() for k, r in sorted(m.items())}
                for c, m in sorted(self.records.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Channels:
        return cls(
            {
                c: {k: LayerRecord.from_json(r) for k, r in m.items()}
                for c, m in data.get("channels", {}).items()
            }
        )


def channels_path() -> Path:
    # Host-wide (not per plex): other plexes' bakes read what the staging plex promoted.
    return state_root() / "channels.json"


def load_channels() -> Channels:
    path = channels_path()
    if not path.exists():
        return Channels()
    try:
        return Channels.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PlexError(
            f"{path}: channels file is damaged ({e})",
            hint="move it away; bakes then use the latest package layers",
        ) from None


def save_channels(channels: Channels) -> None:
    write_private(channels_path(), json.dumps(channels.to_json(), indent=2) + "\n")


# -- what a bake builds on ---------------------------------------------------------------------


def pinned_layer(
    recipe: Recipe, channel: Channel | str, channels: Channels | None = None
) -> PackageLayer | None:
    """The package layer `channel` puts under this recipe instead of its own, or None.

    None for `latest`, for bases that have no shared package layer, when the channel has no
    record for the lineage, and when the record is the recipe's own layer already.
    """
    if Channel(channel) is Channel.LATEST or recipe.package.base.kind not in LAYERED_KINDS:
        return None
    rec = (channels or load_channels()).get(channel, lineage_key(recipe.role, recipe.package))
    if rec is None or rec.package_digest == recipe.package.digest:
        return None
    return rec.package_layer(str(channels_path()))


def rebase(
    recipe: Recipe,
    layer: PackageLayer,
    role_recipe: RoleRecipe,
    renderer: Renderer,
    context: dict[str, Any],
) -> Recipe:
    """The same plex layer on another package layer (files that name the layer re-rendered)."""
    files = render_files(role_recipe, renderer, {**context, "package_digest": layer.digest})
    plex_layer = replace(recipe.layer, package_digest=layer.digest, files=files)
    return replace(recipe, package=layer, layer=plex_layer)


def channel_of(recipe: Recipe, channels: Channels | None = None) -> Channel:
    """`stable` when the recipe's package layer is the stable one of its lineage."""
    rec = (channels or load_channels()).get(
        Channel.STABLE, lineage_key(recipe.role, recipe.package)
    )
    if rec is not None and rec.package_digest == recipe.package.digest:
        return Channel.STABLE
    return Channel.LATEST


def channel_alias(plex: str, role: Role | str, channel: Channel | str = Channel.STABLE) -> str:
    """`<plex>/<role>@stable`: the staging plex's image that passed (a digest12 is hex, so it
    never reads `stable`)."""
    return f"{plex}/{role}@{channel}"
