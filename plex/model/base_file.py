"""What a user writes in a base image definition (`images/<name>.yaml`). Pure.

The definition as written is hashed into the package layer (plex.bake.recipe.PackageLayer), so
the model only checks it: the data kept is the file's own mapping, defaults not filled in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# What each kind of base needs to be built from.
REQUIRED = {
    "mmdebstrap": ("suite",),
    "incus-remote": ("server", "alias"),
    "qcow2": ("url", "checksum_url"),
}


class BaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["mmdebstrap", "incus-remote", "qcow2"]
    family: Literal["debian", "suse", "alpine"]  # plex.services.remote_layer.INSTALL
    packages: tuple[str, ...] = Field((), description="installed in every role's image")
    # mmdebstrap
    suite: str | None = None
    mirror: str | None = Field(None, description="Debian mirror ($PLEX_DEBIAN_MIRROR wins)")
    components: tuple[str, ...] = ()
    variant: str | None = None
    # incus-remote
    server: str | None = None
    protocol: Literal["simplestreams", "incus"] = "simplestreams"
    alias: str | None = None
    install: str | None = Field(None, description="package install command; {packages}")
    # qcow2 (VM bases; plex.bake.bases.Qcow2Base checks the rest)
    url: str | None = None
    checksum_url: str | None = None
    rke2_install: Literal["tar", "rpm"] = "tar"

    def missing(self) -> list[str]:
        """The keys its kind needs that the file does not set."""
        return [k for k in REQUIRED[self.kind] if getattr(self, k) is None]
