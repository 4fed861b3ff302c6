"""What a user writes in a role recipe (`bake/<role>.yaml` and the files it includes). Pure.

Loaded by `plex.bake.recipe` through the one YAML loader, so a broken recipe is one line naming
file:line and field, at bake and in `plex validate`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Strings = tuple[str, ...]


def _octal(value: object) -> str:
    # YAML 1.1 reads an unquoted 0644 as the number 420: refuse numbers rather than guess.
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError(f'{value!r} is not a quoted octal mode like "0644"')
    return value


def _per_family(value: object) -> object:
    # A plain list applies to every OS family ("all"); a mapping names units per family
    # (ssh is `ssh` on Debian and `sshd` on openSUSE).
    return {"all": value} if isinstance(value, list) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipeFileEntry(_Model):
    """A file of the image, rendered from a jinja2 template in bake/templates/."""

    path: str = Field(..., pattern=r"^/")
    template: str
    mode: Annotated[str, BeforeValidator(_octal)] = Field("0644", validate_default=True)
    per_node: bool = Field(False, description="one copy per node, in /etc/plex/nodes/<node>/")
    expand: str | None = Field(None, description="context list: one file per item")


class RecipeArtifact(_Model):
    """A release artifact (by checksum) and the shell commands that install it ({path})."""

    name: str
    install: Strings = ()
    when: Literal["airgap"] | None = Field(None, description="only with kubernetes.airgap")


class RecipeCommands(_Model):
    package: Strings = Field((), description="in the package layer (no plex data)")
    plex: Strings = Field((), description="in the plex layer, after the files")


class RecipeFile(_Model):
    """One recipe file; a role's recipe is its includes, then its own entries."""

    role: str | None = None
    include: Strings = Field((), description="recipe names in bake/, merged first")
    packages: dict[str, Strings] = Field({}, description="OS family -> packages")
    artifacts: tuple[RecipeArtifact, ...] = ()
    files: tuple[RecipeFileEntry, ...] = ()
    services: Annotated[dict[str, Strings], BeforeValidator(_per_family)] = {}
    commands: RecipeCommands = RecipeCommands()
    validate_: Strings = Field((), alias="validate", description="checks run in the image")
