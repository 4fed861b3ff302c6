"""Role recipes: what goes into an image, as two content-addressed layers. Pure.

A role recipe (`bake/<role>.yaml`, plus the files it includes) lists packages per OS family,
release artifacts, files (jinja2 templates), services and commands. `make_recipe` turns it, the
plex and its identity into a `Recipe`:

- the package layer: base image + packages + artifacts (by checksum) + package commands.
  Its digest does not depend on plex data, so plexes and roles with the same packages share it.
- the plex layer: the rendered files, services and commands on top of the package layer.
  A change to plex data (an address, a key, an upstream) changes only this digest.

Digests are sha256 over canonical JSON of everything that goes in, so an unchanged recipe is a
no-op and any change, however small, rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.bake.render import Renderer
from plex.errors import ConfigError, ConfigErrors
from plex.model.base_file import BaseFile
from plex.model.plex import Engine, Plex, Role
from plex.model.recipe_file import RecipeFile
from plex.plexfile.yamlfile import YamlDoc, load_model

RECIPE_FORMAT = 1  # bump when the meaning of a recipe changes, to rebuild every layer
ARTIFACT_DIR = "/tmp/plex-artifacts"  # noqa: S108 - inside the image being built
NODES_DIR = "/etc/plex/nodes"


def digest_of(data: Any) -> str:
    """sha256 of canonical JSON: sorted keys, no whitespace, UTF-8."""
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# What users write


@dataclass(frozen=True)
class FileSpec:
    path: str
    template: str
    mode: int = 0o644
    per_node: bool = False
    expand: str | None = None  # context key holding a list of items: one file per item


@dataclass(frozen=True)
class ArtifactSpec:
    name: str  # rke2 | rke2-images | zot
    install: tuple[str, ...]  # shell commands; {path} is the artifact inside the build root
    when: str | None = None  # a plex switch the artifact needs: `airgap` (kubernetes.airgap)

    def wanted(self, plex: Plex) -> bool:
        return self.when is None or (self.when == "airgap" and plex.kubernetes.airgap)


@dataclass(frozen=True)
class RoleRecipe:
    """A role recipe after includes are merged (includes first, then the role's own entries)."""

    role: Role
    packages: Mapping[str, tuple[str, ...]]  # family -> packages
    artifacts: tuple[ArtifactSpec, ...]
    files: tuple[FileSpec, ...]
    services: Mapping[str, tuple[str, ...]]  # family (or "all") -> units to enable
    package_commands: tuple[str, ...]
    plex_commands: tuple[str, ...]
    validate: tuple[str, ...]
    sources: tuple[str, ...]  # recipe files read, for error messages and provenance


@dataclass(frozen=True)
class BaseImage:
    """An images/<name>.yaml definition."""

    name: str
    kind: str  # mmdebstrap | incus-remote | qcow2
    family: str  # debian | suse
    data: Mapping[str, Any]  # the whole definition (hashed into the package layer)

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(self.data.get("packages", ()))


def recipe_file(bake_dir: Path, role: Role, engine: Engine) -> Path:
    # The registry role's content depends on the engine: one recipe per engine.
    if role is Role.REGISTRY:
        return bake_dir / f"registry-{engine.value}.yaml"
    return bake_dir / f"{role.value}.yaml"


def load_role_recipe(bake_dir: Path, role: Role, engine: Engine = Engine.ZOT) -> RoleRecipe:
    """The role's recipe, includes first; ConfigErrors (file:line: field) for a broken one."""
    main = recipe_file(bake_dir, role, engine)
    own, doc = load_model(main, RecipeFile, "recipe file")
    parts: list[tuple[Path, RecipeFile, YamlDoc]] = []
    for i, inc in enumerate(own.include):
        file = bake_dir / f"{inc}.yaml"
        if not file.is_file():
            raise ConfigErrors([doc.error(("include", i), f"no recipe {file}")])
        parts.append((file, *load_model(file, RecipeFile, "recipe file")))
    parts.append((main, own, doc))
    # A template that does not exist would fail the bake after its downloads: say so now.
    missing = [
        d.error(("files", i, "template"), f"no template {bake_dir / 'templates' / f.template}")
        for _, part, d in parts
        for i, f in enumerate(part.files)
        if not (bake_dir / "templates" / f.template).is_file()
    ]
    if missing:
        raise ConfigErrors(missing)

    packages: dict[str, list[str]] = {}
    files: dict[str, FileSpec] = {}
    services: dict[str, list[str]] = {}
    for _, part, _ in parts:
        for family, names in part.packages.items():
            packages.setdefault(family, []).extend(names)
        for f in part.files:
            # A later entry for the same path (the role's) overrides an included one.
            files[f.path] = FileSpec(f.path, f.template, int(f.mode, 8), f.per_node, f.expand)
        for family, units in part.services.items():
            services.setdefault(family, []).extend(units)
    return RoleRecipe(
        role=role,
        packages={k: tuple(dict.fromkeys(v)) for k, v in packages.items()},
        artifacts=tuple(
            ArtifactSpec(a.name, a.install, a.when) for _, part, _ in parts for a in part.artifacts
        ),
        files=tuple(files.values()),
        services={k: tuple(dict.fromkeys(v)) for k, v in services.items()},
        package_commands=tuple(c for _, part, _ in parts for c in part.commands.package),
        plex_commands=tuple(c for _, part, _ in parts for c in part.commands.plex),
        validate=tuple(c for _, part, _ in parts for c in part.validate_),
        sources=tuple(str(p) for p, _, _ in parts),
    )


def load_base_image(images_dir: Path, name: str) -> BaseImage:
    file = images_dir / f"{name}.yaml"
    if not file.is_file():
        known = sorted(p.stem for p in images_dir.glob("*.yaml"))
        raise ConfigErrors(
            [ConfigError(str(file), "", f"no base image '{name}' (known: {', '.join(known)})")]
        )
    base, doc = load_model(file, BaseFile, "base image")
    missing = base.missing()
    if missing:
        raise ConfigErrors([doc.error((k,), f"required for a {base.kind} base") for k in missing])
    # The definition as written (not the model's defaults): it is hashed into the package layer.
    return BaseImage(base.name, base.kind, base.family, doc.data)


# ---------------------------------------------------------------------------------------------
# What plex computes


@dataclass(frozen=True)
class ResolvedArtifact:
    """A release artifact after its checksum is known (see plex.store.releases)."""

    name: str
    url: str
    sha256: str
    filename: str
    version: str


class Layer:
    """An image layer, identified by the digest of what it is built from (`inputs`)."""

    def inputs(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def digest(self) -> str:
        return digest_of(self.inputs())

    @property
    def short(self) -> str:
        """The digest as humans see it (aliases, progress, descriptions)."""
        return self.digest[:12]


@dataclass(frozen=True)
class PackageLayer(Layer):
    base: BaseImage
    packages: tuple[str, ...]
    artifacts: tuple[tuple[ResolvedArtifact, tuple[str, ...]], ...]  # (artifact, install cmds)
    commands: tuple[str, ...]
    mirror: str | None = None  # not hashed: a mirror serves the same packages

    def inputs(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "base": dict(self.base.data) | {"mirror": None},
            "packages": sorted(self.packages),
            "artifacts": [
                {"name": a.name, "sha256": a.sha256, "version": a.version, "install": list(c)}
                for a, c in self.artifacts
            ],
            "commands": list(self.commands),
        }


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: bytes
    mode: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class PlexLayer(Layer):
    package_digest: str
    files: tuple[RenderedFile, ...]
    services: tuple[str, ...]
    commands: tuple[str, ...]
    validate: tuple[str, ...]

    def inputs(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "package_layer": self.package_digest,
            "files": {f.path: {"sha256": f.sha256, "mode": f"{f.mode:04o}"} for f in self.files},
            "services": list(self.services),
            "commands": list(self.commands),
            "validate": list(self.validate),
        }


@dataclass(frozen=True)
class Recipe(Layer):
    plex: str
    role: Role
    package: PackageLayer
    layer: PlexLayer
    sources: tuple[str, ...] = field(default=())

    def inputs(self) -> dict[str, Any]:
        """The image's identity is its plex layer's (whose inputs cover the package layer)."""
        return self.layer.inputs()

    def provenance(self) -> dict[str, Any]:
        """What a published image records about how it was made."""
        return {
            "plex": self.plex,
            "role": self.role.value,
            "digest": self.digest,
            "package_digest": self.package.digest,
            "package": self.package.inputs(),
            "layer": self.layer.inputs(),
            "recipe_files": list(self.sources),
        }


def make_recipe(
    plex: Plex,
    role: Role,
    role_recipe: RoleRecipe,
    base: BaseImage,
    renderer: Renderer,
    context: Mapping[str, Any],
    artifacts: Mapping[str, ResolvedArtifact],
) -> Recipe:
    """Combine a role recipe with the plex (via the template context) into a Recipe."""
    family = base.family
    packages = (*base.packages, *role_recipe.packages.get(family, ()))
    wanted = [a for a in role_recipe.artifacts if a.wanted(plex)]
    missing = [a.name for a in wanted if a.name not in artifacts]
    if missing:
        raise ValueError(f"artifacts not resolved: {missing}")
    package = PackageLayer(
        base=base,
        packages=tuple(dict.fromkeys(packages)),
        artifacts=tuple((artifacts[a.name], a.install) for a in wanted),
        commands=role_recipe.package_commands,
    )
    ctx = {**context, "package_digest": package.digest}
    files = render_files(role_recipe, renderer, ctx)
    layer = PlexLayer(
        package_digest=package.digest,
        files=files,
        services=tuple(
            dict.fromkeys(
                (*role_recipe.services.get("all", ()), *role_recipe.services.get(family, ()))
            )
        ),
        commands=role_recipe.plex_commands,
        validate=role_recipe.validate,
    )
    return Recipe(plex.name, role, package, layer, role_recipe.sources)


def render_files(
    role_recipe: RoleRecipe, renderer: Renderer, ctx: Mapping[str, Any]
) -> tuple[RenderedFile, ...]:
    out: list[RenderedFile] = []
    for spec in role_recipe.files:
        if spec.expand:
            for item in ctx[spec.expand]:
                text = renderer.render(spec.template, {**ctx, "item": item})
                out.append(RenderedFile(f"{spec.path}/{item['file']}", text.encode(), spec.mode))
        elif spec.per_node:
            for node in ctx["role_nodes"]:
                text = renderer.render(spec.template, {**ctx, "node": node})
                path = f"{NODES_DIR}/{node.name}{spec.path}"
                out.append(RenderedFile(path, text.encode(), spec.mode))
        else:
            out.append(
                RenderedFile(spec.path, renderer.render(spec.template, ctx).encode(), spec.mode)
            )
    return tuple(sorted(out, key=lambda f: f.path))
