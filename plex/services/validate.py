"""`plex validate`: every rule a plex must pass before bake, deploy or the nightly run.

Loading checks the file itself (YAML, schema, cross-field rules, CA files). The rules checked
here are the ones the later steps apply to the loaded plex: the registry engine's (upstream
names it can serve, TLS, ports), the nightly smoke image against the registry upstreams, and
each role's base image (it exists; a VM role's is a qcow2 base), and the data files bake and
deploy read for it (role recipes, probes, role profiles), loaded as they load them. Each problem
comes back with file:line of its field, like a load error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydantic import BaseModel

from plex.bake.bases import base_problems
from plex.bake.recipe import load_base_image, load_role_recipe
from plex.deploy.probes import load_probes
from plex.deploy.spec import load_profile
from plex.errors import ConfigError, ConfigErrors, PlexError
from plex.model import topology
from plex.model.plex import Plex
from plex.model.probe_file import ProbesFile
from plex.model.profile_file import ProfileFile
from plex.model.recipe_file import RecipeFile
from plex.plexfile.checks import warnings
from plex.plexfile.crosscheck import PlexFile, cross_check
from plex.plexfile.load import load_plex_doc, with_line
from plex.plexfile.yamlfile import load_model
from plex.registry.engines import check_engine
from plex.registry.mirrors import node_files
from plex.services.smoke import smoke_image


@dataclass
class Validation:
    plexes: list[Plex] = field(default_factory=list)
    data_files: list[tuple[Path, str]] = field(default_factory=list)  # (file, what it is)
    warnings: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)


def _errors(e: PlexError, plex: Plex) -> list[ConfigError]:
    if isinstance(e, ConfigErrors):
        return list(e.errors)
    if isinstance(e, ConfigError):
        return [e]
    return [ConfigError(plex.source, "", e.message, hint=e.hint)]


def later_rules(plex: Plex, images: Path) -> tuple[list[ConfigError], list[ConfigError]]:
    """(errors, warnings) of the rules bake, deploy and nightly apply to a loaded plex."""
    errors: list[ConfigError] = []
    warns: list[ConfigError] = []
    if topology.registry_node(plex) is not None:
        for check in (check_engine, node_files):
            try:
                check(plex)
            except PlexError as e:
                errors += _errors(e, plex)
        try:
            smoke_image(plex)
        except PlexError as e:
            # The default smoke image only matters once the plex runs the nightly: a plex
            # that names its own (a nightly section) must get it right.
            (errors if "nightly" in plex.model_fields_set else warns).extend(_errors(e, plex))
    errors += base_problems(plex, images)
    return errors, warns


def data_file_problems(plex: Plex, root: Path) -> list[ConfigError]:
    """The recipes, probes and role profiles the plex's roles use, each loaded as bake and
    deploy load them: a broken one is file:line: field of that file. (Base images: later_rules.)"""
    errors: list[ConfigError] = []
    loads: list[Callable[[], object]] = [lambda: load_probes(root / "deploy" / "probes.yaml")]
    for role, rc in plex.roles.items():
        if rc.count == 0:
            continue
        virt = plex.os_for(role).virt
        loads.append(partial(load_role_recipe, root / "bake", role, plex.registry.engine))
        loads.append(partial(load_profile, role, virt, root / "deploy" / "profiles"))
    for load in loads:
        try:
            load()
        except PlexError as e:
            errors += _errors(e, plex)
    return errors


def data_file_kind(path: Path) -> str | None:
    """What a file under bake/, images/ or deploy/ is (by where it is), or None: a plex."""
    parent = path.resolve().parent
    if path.name == "probes.yaml" and parent.name == "deploy":
        return "probes"
    if parent.name == "profiles" and parent.parent.name == "deploy":
        return "role profile"
    return {"bake": "recipe", "images": "base image"}.get(parent.name)


def load_data_file(path: Path, what: str) -> None:
    """Load one data file as bake and deploy load it; ConfigErrors (file:line: field)."""
    if what == "base image":
        load_base_image(path.parent, path.stem)
        return
    models: dict[str, type[BaseModel]] = {
        "probes": ProbesFile,
        "role profile": ProfileFile,
        "recipe": RecipeFile,
    }
    load_model(path, models[what], what)


def validate(paths: Sequence[Path], root: Path) -> Validation:
    """Validate every file, and the bake/, deploy/ and images/ files under `root` that they
    use; collect all problems instead of stopping at the first file."""
    images = root / "images"
    out = Validation()
    files: list[PlexFile] = []
    seen: set[str] = set()
    for p in paths:
        what = data_file_kind(p)
        if what is not None:  # a recipe, base, probes file or profile: checked as itself
            try:
                load_data_file(p, what)
                out.data_files.append((p, what))
            except ConfigErrors as e:
                out.errors.extend(e.errors)
            continue
        try:
            plex, doc = load_plex_doc(p)
        except ConfigErrors as e:
            out.errors.extend(e.errors)
            continue
        out.plexes.append(plex)
        pf = PlexFile(plex, doc.lines)
        files.append(pf)
        out.warnings.extend(f"{p}: {w.path}: {w.message}" for w in warnings(plex))
        errors, warns = later_rules(plex, images)
        # The plex file's lines for its own fields only (a base image's error has its own).
        errors = [with_line(e, pf.lines) if e.file == plex.source else e for e in errors]
        for err in [*errors, *data_file_problems(plex, root)]:
            if err.message not in seen:  # a file several roles or plexes use: reported once
                seen.add(err.message)
                out.errors.append(err)
        out.warnings.extend(with_line(w, pf.lines).message for w in warns)
    # Plexes against each other: what two plexes on one network must not share.
    out.errors.extend(cross_check(files))
    return out
