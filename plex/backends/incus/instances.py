"""Instances: create, start, stop, delete, their config and state, and their snapshots."""

from __future__ import annotations

import time
from typing import Any, Unpack

from plex.backends.incus.protocol import NewInstance
from plex.backends.incus.rest import IncusRest, names
from plex.errors import BackendError


def _is_fingerprint(image: str) -> bool:
    return len(image) == 64 and all(c in "0123456789abcdef" for c in image)


class Instances(IncusRest):
    def instance_names(self) -> list[str]:
        return names(self.sync("GET", "instances"))

    def instance_config(self, name: str) -> dict[str, str]:
        meta = self.sync("GET", f"instances/{name}", what=f"get {name}")
        return dict(meta.get("config", {})) if meta else {}

    def instance_state(self, name: str) -> dict[str, Any]:
        return self.sync("GET", f"instances/{name}/state", what=f"state of {name}") or {}

    def _state_or_none(self, name: str) -> dict[str, Any] | None:
        """The instance's state, None when it does not exist."""
        state: dict[str, Any] | None = self.sync(
            "GET", f"instances/{name}/state", what=f"state of {name}", ok_missing=True
        )
        return state

    def set_config(self, name: str, config: dict[str, str]) -> None:
        """Merge `config` keys into the instance's config (PATCH keeps the other keys)."""
        self.sync("PATCH", f"instances/{name}", json={"config": config}, what=f"update {name}")

    def create_instance(self, name: str, **new: Unpack[NewInstance]) -> None:
        """Create (not start) an instance from a local image (fingerprint or alias), or from
        an explicit `source` such as a remote image server's alias."""
        image, source = new["image"], new.get("source")
        if source is None:
            key = "fingerprint" if _is_fingerprint(image) else "alias"
            source = {"type": "image", key: image}
        body = {
            "name": name,
            "type": new.get("virt", "container"),
            "source": source,
            "config": new["config"],
            "devices": new["devices"],
            "profiles": new["profiles"],
        }
        target = new.get("target")
        params = {"target": target} if target else None
        self.sync("POST", "instances", json=body, params=params, what=f"create {name}")

    def _set_state(self, name: str, action: str, force: bool = False) -> None:
        self.sync(
            "PUT",
            f"instances/{name}/state",
            what=f"{action} {name}",
            json={"action": action, "timeout": 30, "force": force},
        )

    def start(self, name: str) -> None:
        self._set_state(name, "start")

    def stop(self, name: str, force: bool = True) -> None:
        state = self._state_or_none(name)
        if state is None or state.get("status") != "Running":
            return
        self._set_state(name, "stop", force=force)

    def delete_instance(self, name: str) -> None:
        """Stop (forced) and delete `name`, waiting for both; gone already is fine.

        Retried: an instance another (killed) plex process was starting or stopping can be
        busy for a moment, and a deploy must finish that work without a manual step."""
        last: BackendError | None = None
        for attempt in range(5):
            state = self._state_or_none(name)
            if state is None:
                return
            try:
                if state.get("status") not in ("Stopped", None):
                    self._set_state(name, "stop", force=True)
                self.sync("DELETE", f"instances/{name}", ok_missing=True, what=f"delete {name}")
            except BackendError as e:
                last = e
                time.sleep(1 + attempt)
                continue
            if self.request("GET", f"instances/{name}", ok_missing=True) is None:
                return
        why = last.message if last else "it is still there"
        raise BackendError(f"Incus: cannot delete {name}: {why}")

    # -- snapshots (copy-on-write on btrfs; they go with their instance) -------------------

    def snapshots(self, name: str) -> list[str]:
        return names(self.sync("GET", f"instances/{name}/snapshots", what=f"snapshots of {name}"))

    def create_snapshot(self, name: str, snapshot: str) -> None:
        self.sync(
            "POST",
            f"instances/{name}/snapshots",
            what=f"snapshot {name}/{snapshot}",
            json={"name": snapshot, "stateful": False},
        )

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self.sync(
            "DELETE",
            f"instances/{name}/snapshots/{snapshot}",
            what=f"delete snapshot {name}/{snapshot}",
            ok_missing=True,
        )

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Put `name` back to `snapshot` (Incus wants it stopped for a clean restore)."""
        self.sync(
            "PUT",
            f"instances/{name}",
            what=f"restore {name}/{snapshot}",
            json={"restore": snapshot},
        )
