"""Package-layer channels: lineage keys, records that rebuild their layer, pinning a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plex.bake.recipe import (
    BaseImage,
    FileSpec,
    PackageLayer,
    Recipe,
    ResolvedArtifact,
    RoleRecipe,
    make_recipe,
)
from plex.bake.render import Renderer
from plex.errors import PlexError
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex
from plex.store.channels import (
    Channel,
    Channels,
    channel_alias,
    channel_of,
    channels_path,
    layer_from_json,
    layer_to_json,
    lineage_key,
    load_channels,
    pinned_layer,
    rebase,
    record_for,
    save_channels,
)

PLEXES = Path(__file__).resolve().parents[2] / "plexes"

DEBIAN = BaseImage(
    "debian-bookworm",
    "mmdebstrap",
    "debian",
    {
        "name": "debian-bookworm",
        "kind": "mmdebstrap",
        "family": "debian",
        "suite": "bookworm",
        "packages": ["systemd"],
    },
)
MICROOS = BaseImage(
    "opensuse-microos",
    "qcow2",
    "suse",
    {"name": "opensuse-microos", "kind": "qcow2", "family": "suse"},
)
RKE2 = ResolvedArtifact(
    "rke2", "http://127.0.0.1/rke2.tar.gz", "a" * 64, "rke2.tar.gz", "v1.31.4+rke2r1"
)
RKE2_OTHER = ResolvedArtifact(
    "rke2", "http://127.0.0.1/rke2.tar.gz", "b" * 64, "rke2.tar.gz", "v1.30.1+rke2r1"
)


@pytest.fixture(scope="module")
def plex() -> Plex:
    return load_plex(PLEXES / "demo.yaml")


@pytest.fixture
def renderer(tmp_path: Path) -> Renderer:
    (tmp_path / "layer.j2").write_text("layer {{ package_digest }} for {{ who }}\n")
    return Renderer(tmp_path)


def role_recipe(packages: tuple[str, ...]) -> RoleRecipe:
    return RoleRecipe(
        role=Role.SERVER,
        packages={"debian": packages, "suse": packages},
        artifacts=(),
        files=(FileSpec("/etc/plex/layer", "layer.j2"),),
        services={"all": ("ssh",)},
        package_commands=(),
        plex_commands=(),
        validate=(),
        sources=("bake/server.yaml",),
    )


def recipe_with(
    plex: Plex, renderer: Renderer, packages: tuple[str, ...], base: BaseImage = DEBIAN
) -> tuple[Recipe, RoleRecipe]:
    rr = role_recipe(packages)
    return make_recipe(plex, Role.SERVER, rr, base, renderer, {"who": "demo"}, {}), rr


def test_lineage_follows_role_base_and_artifacts_not_packages() -> None:
    a = PackageLayer(DEBIAN, ("curl",), ((RKE2, ("tar -xzf {path}",)),), ())
    b = PackageLayer(DEBIAN, ("curl", "jq"), ((RKE2, ("tar -xzf {path}",)),), ("echo",))
    c = PackageLayer(DEBIAN, ("curl",), ((RKE2_OTHER, ("tar -xzf {path}",)),), ())
    assert a.digest != b.digest
    assert lineage_key(Role.SERVER, a) == lineage_key(Role.SERVER, b)  # a recipe edit
    assert lineage_key(Role.SERVER, a) != lineage_key(Role.SERVER, c)  # another RKE2
    assert lineage_key(Role.SERVER, a) != lineage_key(Role.AGENT, a)
    assert lineage_key(Role.SERVER, a).startswith("server/debian-bookworm/")


def test_a_record_rebuilds_the_exact_layer_and_rejects_a_tampered_one() -> None:
    layer = PackageLayer(DEBIAN, ("curl", "jq"), ((RKE2, ("tar -xzf {path}",)),), ("true",))
    data = json.loads(json.dumps(layer_to_json(layer)))  # through JSON, as on disk
    again = layer_from_json(data, layer.digest, "channels.json")
    assert again.digest == layer.digest
    assert again.artifacts[0][0] == RKE2  # the URL and file name survive for a rebuild
    data["packages"].append("vim")
    with pytest.raises(PlexError, match="hashes to"):
        layer_from_json(data, layer.digest, "channels.json")
    del data["packages"]
    with pytest.raises(PlexError, match="incomplete"):
        layer_from_json(data, layer.digest, "channels.json")


def test_channels_round_trip_through_the_state_dir(state_dir: Path) -> None:
    assert load_channels() == Channels()
    layer = PackageLayer(DEBIAN, ("curl",), (), ())
    rec = record_for(Role.LB, layer, "verniplex", "20250101T020000Z-abcd", now=1.5)
    save_channels(Channels().promote(Channel.STABLE, [rec]))
    assert channels_path() == state_dir / "channels.json"
    assert load_channels().get("stable", rec.key) == rec
    assert load_channels().get("latest", rec.key) is None
    channels_path().write_text("{not json")
    with pytest.raises(PlexError, match="damaged"):
        load_channels()


def test_stable_pins_the_promoted_layer_and_re_renders_files_naming_it(
    plex: Plex, renderer: Renderer
) -> None:
    stable_recipe, _ = recipe_with(plex, renderer, ("curl",))
    chans = Channels().promote(
        Channel.STABLE, [record_for(Role.SERVER, stable_recipe.package, "verniplex", "r1")]
    )
    edited, rr = recipe_with(plex, renderer, ("curl", "jq"))  # someone added a package
    assert edited.package.digest != stable_recipe.package.digest
    assert channel_of(edited, chans) is Channel.LATEST
    assert pinned_layer(edited, Channel.LATEST, chans) is None  # --channel latest opts out
    pinned = pinned_layer(edited, Channel.STABLE, chans)
    assert pinned is not None and pinned.digest == stable_recipe.package.digest
    rebased = rebase(edited, pinned, rr, renderer, {"who": "demo"})
    assert rebased.package.digest == stable_recipe.package.digest
    assert rebased.layer.package_digest == stable_recipe.package.digest
    assert rebased.digest == stable_recipe.digest  # same plex layer on the same package layer
    assert (
        rebased.layer.files[0].content
        == f"layer {stable_recipe.package.digest} for demo\n".encode()
    )
    assert channel_of(rebased, chans) is Channel.STABLE
    # The stable layer itself needs no pin.
    assert pinned_layer(stable_recipe, Channel.STABLE, chans) is None


def test_no_pin_without_a_record_or_for_vm_bases(plex: Plex, renderer: Renderer) -> None:
    recipe, _ = recipe_with(plex, renderer, ("curl",))
    assert pinned_layer(recipe, Channel.STABLE, Channels()) is None
    vm, _ = recipe_with(plex, renderer, ("curl",), MICROOS)
    other, _ = recipe_with(plex, renderer, ("curl", "jq"), MICROOS)
    chans = Channels().promote(Channel.STABLE, [record_for(Role.SERVER, vm.package, "v", "r")])
    assert pinned_layer(other, Channel.STABLE, chans) is None  # Packer builds VMs whole


def test_channel_alias_never_looks_like_a_digest_alias() -> None:
    assert channel_alias("demo", Role.SERVER) == "demo/server@stable"
    assert channel_alias("demo", "lb", "latest") == "demo/lb@latest"
