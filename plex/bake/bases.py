"""The base images a plex's roles name (`os.base` -> `images/<name>.yaml`), checked as bake
will use them: before any download, and by `plex validate`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plex.bake.packer_template import Qcow2Base
from plex.bake.recipe import load_base_image
from plex.errors import ConfigError, ConfigErrors
from plex.model.plex import Plex, Role, Virt


def vm_bases(plex: Plex, roles: Sequence[Role], images: Path) -> dict[Role, Qcow2Base]:
    """Every role's base must be a qcow2 base: say so before anything is downloaded."""
    out: dict[Role, Qcow2Base] = {}
    for role in roles:
        name = plex.os_for(role).base
        base = load_base_image(images, name)
        rc = plex.roles.get(role)
        field = f"roles.{role.value}.os.base" if rc is not None and rc.os is not None else "os.base"
        if base.kind != "qcow2":
            raise ConfigErrors(
                [
                    ConfigError(
                        plex.source or f"plexes/{plex.name}.yaml",
                        field,
                        f"'{name}' ({base.kind}) cannot be baked as a VM",
                        hint="VM roles need a qcow2 base such as opensuse-microos",
                    )
                ]
            )
        out[role] = Qcow2Base.from_base(base, str(images))
    return out


def base_problems(plex: Plex, images: Path) -> list[ConfigError]:
    """Every deployed role's base exists, and a VM role's is a qcow2 base (as bake checks)."""
    problems: list[ConfigError] = []
    for role, rc in plex.roles.items():
        if rc.count == 0:
            continue
        field = f"roles.{role.value}.os.base" if rc.os is not None else "os.base"
        try:
            if plex.os_for(role).virt is Virt.VM:
                vm_bases(plex, [role], images)
            else:
                load_base_image(images, plex.os_for(role).base)
        except ConfigErrors as e:
            for err in e.errors:
                if Path(err.file).exists():
                    problems.append(err)  # the plex's field, or a field of the base's file
                else:  # no such base file: the plex's field names it
                    problems.append(ConfigError(plex.source, field, err.problem, hint=err.hint))
    return problems
