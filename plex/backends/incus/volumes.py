"""Custom storage volumes (the registry's cache lives on one)."""

from __future__ import annotations

from plex.backends.incus.rest import IncusRest


class Volumes(IncusRest):
    def _volume_path(self, pool: str, name: str = "") -> str:
        return f"storage-pools/{pool}/volumes/custom" + (f"/{name}" if name else "")

    def volume_exists(self, pool: str, name: str, target: str | None = None) -> bool:
        params = {"target": target} if target else None
        resp = self.request("GET", self._volume_path(pool, name), params=params, ok_missing=True)
        return resp is not None

    def ensure_volume(
        self, pool: str, name: str, config: dict[str, str], target: str | None = None
    ) -> bool:
        """Create a custom volume if missing; returns True when it was created.

        `target`: the cluster member holding it. On a cluster a local pool (dir, btrfs) has
        one volume per member: the registry's cache must live where the registry node runs."""
        if self.volume_exists(pool, name, target):
            return False
        self.sync(
            "POST",
            self._volume_path(pool),
            what=f"create volume {name}",
            params={"target": target} if target else None,
            json={"name": name, "type": "custom", "content_type": "filesystem", "config": config},
        )
        return True

    def delete_volume(self, pool: str, name: str) -> None:
        self.request(
            "DELETE", self._volume_path(pool, name), ok_missing=True, what=f"delete volume {name}"
        )
