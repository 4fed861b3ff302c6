"""The real Incus backend: one object per project, assembled from one part per kind of object.

The calls plex needs are made against the REST API directly so that every operation is waited
for and its failure becomes a BackendError naming the instance (see `rest`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from plex.backends.incus.files import Files
from plex.backends.incus.images import Images
from plex.backends.incus.instances import Instances
from plex.backends.incus.observe import Observe
from plex.backends.incus.rest import names
from plex.backends.incus.volumes import Volumes
from plex.model.plex import IncusConfig

# Own images, profiles and volumes: a plex's project is self-contained and removable.
# Networks stay shared with the default project (the bridge is set up once per host).
PROJECT_FEATURES = {
    "features.images": "true",
    "features.profiles": "true",
    "features.storage.volumes": "true",
    "features.storage.buckets": "true",
    "features.networks": "false",
}


class PylxdIncus(Instances, Observe, Files, Images, Volumes):
    """The real backend (implements `protocol.Incus`). One object talks to one Incus project."""

    def ensure_project(self) -> None:
        if self.project == "default":
            return
        if (
            self.request("GET", f"projects/{self.project}", ok_missing=True, project=False)
            is not None
        ):
            return
        self.sync(
            "POST",
            "projects",
            project=False,
            what=f"create project {self.project}",
            json={
                "name": self.project,
                "config": PROJECT_FEATURES,
                "description": "managed by plex",
            },
        )

    def delete_project(self) -> None:
        """Remove the project and everything in it (tests use throwaway projects)."""
        for name in self.instance_names():
            self.delete_instance(name)
        for img in self.images():
            self.delete_image(img.fingerprint)
        for pool_name in names(self.sync("GET", "storage-pools", project=False)):
            for v in names(self.sync("GET", f"storage-pools/{pool_name}/volumes/custom")):
                self.delete_volume(pool_name, v)
        for pname in names(self.sync("GET", "profiles")):
            if pname != "default":
                self.sync("DELETE", f"profiles/{pname}", what=f"delete profile {pname}")
        self.request(
            "DELETE",
            f"projects/{self.project}",
            project=False,
            ok_missing=True,
            what=f"delete project {self.project}",
        )


def connect(cfg: IncusConfig, project: str | None = None, create: bool = True) -> PylxdIncus:
    """Connect to the plex's Incus and make sure its project exists."""
    inc = PylxdIncus(cfg, project)
    if create:
        inc.ensure_project()
    return inc


@contextlib.contextmanager
def throwaway_project(cfg: IncusConfig, name: str) -> Iterator[PylxdIncus]:
    """A project created for the duration of the block and removed with everything in it."""
    inc = connect(cfg, name)
    try:
        yield inc
    finally:
        inc.delete_project()
