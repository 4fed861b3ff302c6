"""The base images a plex's roles name (`os.base` -> `images/<name>.yaml`), checked as bake
will use them: before any download, and by `plex validate`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from plex.bake.recipe import BaseImage, load_base_image
from plex.errors import ConfigError, ConfigErrors
from plex.model.plex import Plex, Role, Virt


class Rke2Install(StrEnum):
    """How RKE2 gets into the image: `rke2_install:` in the base definition (default tar)."""

    TAR = "tar"  # the verified release tarball (the same bytes as the containers), /opt/rke2
    RPM = "rpm"  # rke2-<type> from the rancher RPM repository, inside a transaction


@dataclass(frozen=True)
class Qcow2Base:
    """A `kind: qcow2` base definition (images/opensuse-microos.yaml)."""

    name: str
    url: str
    checksum_url: str
    rke2_install: Rke2Install

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def from_base(cls, base: BaseImage, images_dir: str = "images") -> Qcow2Base:
        file = f"{images_dir}/{base.name}.yaml"

        def bad(path: str, problem: str) -> ConfigErrors:
            return ConfigErrors([ConfigError(file, path, problem)])

        if base.kind != "qcow2":
            raise bad("kind", f"'{base.kind}' is not a VM base (VM images need kind: qcow2)")
        if base.family != "suse":
            raise bad(
                "family",
                "the Packer template installs with transactional-update: "
                "only family: suse (MicroOS) is supported",
            )
        for key in ("url", "checksum_url"):
            value = base.data.get(key)
            if not isinstance(value, str) or not re.fullmatch(r"https?://\S+", value):
                raise bad(key, "must be an http(s) URL")
        method = base.data.get("rke2_install", Rke2Install.TAR.value)
        try:
            install = Rke2Install(method)
        except ValueError:
            raise bad("rke2_install", f"'{method}' is not tar or rpm") from None
        return cls(base.name, base.data["url"], base.data["checksum_url"], install)


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
