"""Images and their aliases: publish an instance, import and export image files, list, delete."""

from __future__ import annotations

import contextlib
import urllib.parse
from pathlib import Path
from typing import Any

from requests_toolbelt.multipart.encoder import MultipartEncoder

from plex.backends.incus.multipart import boundary, split_multipart
from plex.backends.incus.protocol import ImageInfo
from plex.backends.incus.rest import IncusRest

OCTETS = "application/octet-stream"
CHUNK = 1 << 20


def _info(img: dict[str, Any]) -> ImageInfo:
    return ImageInfo(
        fingerprint=img["fingerprint"],
        aliases=tuple(a["name"] for a in img.get("aliases") or []),
        properties=dict(img.get("properties") or {}),
        size=int(img.get("size", 0)),
        created_at=img.get("created_at", ""),
    )


class Images(IncusRest):
    def publish(self, name: str, *, properties: dict[str, str], compression: str = "zstd") -> str:
        body = {
            "source": {"type": "instance", "name": name},
            "properties": properties,
            "compression_algorithm": compression,
            "public": False,
        }
        meta = self.sync("POST", "images", json=body, what=f"publish {name}")
        fingerprint: str = meta["metadata"]["fingerprint"]
        return fingerprint

    def import_image(
        self, metadata: Path, rootfs: Path | None, properties: dict[str, str], vm: bool = False
    ) -> str:
        """Import a split (metadata + rootfs) or unified image tarball; returns its fingerprint.

        `vm`: the rootfs is a VM disk (qcow2); Incus tells the two apart by the part's name.
        """
        headers = {
            "X-Incus-properties": "&".join(
                f"{urllib.parse.quote(k)}={urllib.parse.quote(v)}" for k, v in properties.items()
            ),
            "X-Incus-public": "0",
        }
        what = f"import {metadata.name}"
        with contextlib.ExitStack() as stack:
            meta_f = stack.enter_context(metadata.open("rb"))
            if rootfs is None:
                headers["Content-Type"] = OCTETS
                meta = self.sync("POST", "images", data=meta_f, headers=headers, what=what)
            else:
                root_f = stack.enter_context(rootfs.open("rb"))
                # Multipart: the metadata part first, then the rootfs (Incus requires this order).
                # Streamed from the files (requests' own `files=` builds the whole body in
                # memory: a VM disk is gigabytes).
                body = MultipartEncoder(
                    [
                        ("metadata", (metadata.name, meta_f, OCTETS)),
                        ("rootfs.img" if vm else "rootfs", (rootfs.name, root_f, OCTETS)),
                    ]
                )
                headers["Content-Type"] = body.content_type
                meta = self.sync("POST", "images", data=body, headers=headers, what=what)
        fp: str = meta["metadata"]["fingerprint"]
        return fp

    def export_image(self, fingerprint: str, dest: Path) -> list[Path]:
        """Write the image's file(s) as Incus stores them into `dest`: one (unified) or two."""
        resp = self.request(
            "GET", f"images/{fingerprint}/export", stream=True, what=f"export {fingerprint[:12]}"
        )
        assert resp is not None
        ctype = resp.headers.get("Content-Type", "")
        dest.mkdir(parents=True, exist_ok=True)
        if ctype.startswith("multipart/form-data"):
            # Split images (VM images: metadata + a qcow2 rootfs.img) come back as multipart:
            # parsed as a stream, each part written to its file, never held in memory.
            return split_multipart(resp.iter_content(CHUNK), boundary(ctype), dest)
        path = dest / f"{fingerprint}.tar"
        with path.open("wb") as f:
            for chunk in resp.iter_content(CHUNK):
                f.write(chunk)
        return [path]

    def images(self) -> list[ImageInfo]:
        return [_info(img) for img in self.sync("GET", "images", params={"recursion": "1"}) or []]

    def image_by_alias(self, alias: str) -> ImageInfo | None:
        meta = self.sync("GET", f"images/aliases/{alias}", ok_missing=True)
        if meta is None:
            return None
        img = self.sync("GET", f"images/{meta['target']}", ok_missing=True, what=f"image {alias}")
        return None if img is None else _info(img)

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        """Point `alias` at `fingerprint`, creating or moving it."""
        existing = self.sync("GET", f"images/aliases/{alias}", ok_missing=True)
        if existing is None:
            self.sync(
                "POST",
                "images/aliases",
                what=f"alias {alias}",
                json={"name": alias, "target": fingerprint, "description": description},
            )
        elif existing["target"] != fingerprint:
            self.sync(
                "PUT",
                f"images/aliases/{alias}",
                what=f"alias {alias}",
                json={"target": fingerprint, "description": description},
            )

    def delete_alias(self, alias: str) -> None:
        self.request("DELETE", f"images/aliases/{alias}", ok_missing=True)

    def delete_image(self, fingerprint: str) -> None:
        self.sync(
            "DELETE",
            f"images/{fingerprint}",
            ok_missing=True,
            what=f"delete image {fingerprint[:12]}",
        )
