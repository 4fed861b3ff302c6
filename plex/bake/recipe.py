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

import yaml

from plex.bake.render import Renderer
from plex.errors import ConfigError, ConfigErrors
from plex.model.plex import Engine, Plex, Role

# libyaml when available: recipes and profiles are read on every bake, even a no-op one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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


_RECIPE_KEYS = {
    "role",
    "include",
    "packages",
    "artifacts",
    "files",
    "services",
    "commands",
    "validate",
}


def _recipe_error(file: Path, path: str, problem: str) -> ConfigErrors:
    return ConfigErrors([ConfigError(str(file), path, problem)])


def _load_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.load(file.read_text(), Loader=_LOADER)  # noqa: S506
    except FileNotFoundError:
        raise _recipe_error(file, "", "recipe file not found") from None
    except yaml.YAMLError as e:
        raise _recipe_error(file, "", f"invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise _recipe_error(file, "", "a recipe must be a mapping")
    unknown = set(data) - _RECIPE_KEYS
    if unknown:
        raise _recipe_error(file, sorted(unknown)[0], "unknown key")
    return data


def _str_list(file: Path, path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _recipe_error(file, path, "must be a list of strings")
    return tuple(value)


def recipe_file(bake_dir: Path, role: Role, engine: Engine) -> Path:
    # The registry role's content depends on the engine: one recipe per engine.
    if role is Role.REGISTRY:
        return bake_dir / f"registry-{engine.value}.yaml"
    return bake_dir / f"{role.value}.yaml"


def load_role_recipe(bake_dir: Path, role: Role, engine: Engine = Engine.ZOT) -> RoleRecipe:
    main = recipe_file(bake_dir, role, engine)
    data = _load_yaml(main)
    parts: list[tuple[Path, dict[str, Any]]] = []
    for inc in _str_list(main, "include", data.get("include")):
        parts.append((bake_dir / f"{inc}.yaml", _load_yaml(bake_dir / f"{inc}.yaml")))
    parts.append((main, data))

    packages: dict[str, list[str]] = {}
    artifacts: list[ArtifactSpec] = []
    files: dict[str, FileSpec] = {}
    services: dict[str, list[str]] = {}
    pkg_cmds: list[str] = []
    plex_cmds: list[str] = []
    validate: list[str] = []
    for file, part in parts:
        pk = part.get("packages") or {}
        if not isinstance(pk, dict):
            raise _recipe_error(file, "packages", "must map an OS family to a package list")
        for family, names in pk.items():
            packages.setdefault(family, []).extend(_str_list(file, f"packages.{family}", names))
        for i, a in enumerate(part.get("artifacts") or []):
            if not isinstance(a, dict) or "name" not in a:
                raise _recipe_error(file, f"artifacts[{i}]", "needs a name")
            if a.get("when") not in (None, "airgap"):
                raise _recipe_error(file, f"artifacts[{i}].when", "must be airgap")
            artifacts.append(
                ArtifactSpec(
                    a["name"],
                    _str_list(file, f"artifacts[{i}].install", a.get("install")),
                    a.get("when"),
                )
            )
        for i, f in enumerate(part.get("files") or []):
            if not isinstance(f, dict) or not {"path", "template"} <= set(f):
                raise _recipe_error(file, f"files[{i}]", "needs path and template")
            extra = set(f) - {"path", "template", "mode", "per_node", "expand"}
            if extra:
                raise _recipe_error(file, f"files[{i}].{sorted(extra)[0]}", "unknown key")
            try:
                mode = int(str(f.get("mode", "0644")), 8)
            except ValueError:
                raise _recipe_error(file, f"files[{i}].mode", "must be octal like 0644") from None
            # A later entry for the same path (the role's) overrides an included one.
            files[f["path"]] = FileSpec(
                f["path"], f["template"], mode, bool(f.get("per_node", False)), f.get("expand")
            )
        svc = part.get("services") or []
        # A list applies to every OS family; a mapping names units per family (ssh is
        # `ssh` on Debian and `sshd` on openSUSE), with `all` for the common ones.
        for family, names in svc.items() if isinstance(svc, dict) else [("all", svc)]:
            services.setdefault(family, []).extend(
                _str_list(
                    file, f"services.{family}" if isinstance(svc, dict) else "services", names
                )
            )
        cmds = part.get("commands") or {}
        if not isinstance(cmds, dict) or set(cmds) - {"package", "plex"}:
            raise _recipe_error(file, "commands", "must have only package: and plex: lists")
        pkg_cmds.extend(_str_list(file, "commands.package", cmds.get("package")))
        plex_cmds.extend(_str_list(file, "commands.plex", cmds.get("plex")))
        validate.extend(_str_list(file, "validate", part.get("validate")))
    return RoleRecipe(
        role=role,
        packages={k: tuple(dict.fromkeys(v)) for k, v in packages.items()},
        artifacts=tuple(artifacts),
        files=tuple(files.values()),
        services={k: tuple(dict.fromkeys(v)) for k, v in services.items()},
        package_commands=tuple(pkg_cmds),
        plex_commands=tuple(plex_cmds),
        validate=tuple(validate),
        sources=tuple(str(p) for p, _ in parts),
    )


def load_base_image(images_dir: Path, name: str) -> BaseImage:
    file = images_dir / f"{name}.yaml"
    try:
        data = yaml.load(file.read_text(), Loader=_LOADER)  # noqa: S506
    except FileNotFoundError:
        known = sorted(p.stem for p in images_dir.glob("*.yaml"))
        raise ConfigErrors(
            [ConfigError(str(file), "", f"no base image '{name}' (known: {', '.join(known)})")]
        ) from None
    if not isinstance(data, dict) or not {"name", "kind", "family"} <= set(data):
        raise _recipe_error(file, "", "needs name, kind and family")
    return BaseImage(data["name"], data["kind"], data["family"], data)


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


@dataclass(frozen=True)
class PackageLayer:
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

    @property
    def digest(self) -> str:
        return digest_of(self.inputs())


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: bytes
    mode: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class PlexLayer:
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

    @property
    def digest(self) -> str:
        return digest_of(self.inputs())


@dataclass(frozen=True)
class Recipe:
    plex: str
    role: Role
    package: PackageLayer
    layer: PlexLayer
    sources: tuple[str, ...] = field(default=())

    @property
    def digest(self) -> str:
        """The image's identity: the plex layer digest (which covers the package layer)."""
        return self.layer.digest

    @property
    def short(self) -> str:
        return self.digest[:12]

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
