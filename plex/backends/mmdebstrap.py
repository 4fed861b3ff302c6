"""Build a Debian package layer on the host with mmdebstrap: base + role packages + artifacts.

Faster and more reproducible than installing packages in a running instance, and it needs no
daemon. The result is a rootfs tarball plus an Incus metadata tarball (a split image).
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import yaml

from plex.backends.run import run
from plex.bake.recipe import ARTIFACT_DIR, PackageLayer
from plex.errors import BackendError, CommandError

MIRROR_ENV = "PLEX_DEBIAN_MIRROR"


def mirror_for(layer: PackageLayer) -> str:
    return os.environ.get(MIRROR_ENV) or str(
        layer.base.data.get("mirror", "http://deb.debian.org/debian")
    )


def build_rootfs(
    layer: PackageLayer,
    artifact_paths: dict[str, Path],
    out: Path,
    apt_cache: Path,
) -> Path:
    """Run mmdebstrap to write `out` (a rootfs tarball); returns it. Atomic: `out` only appears
    when the build succeeded."""
    if shutil.which("mmdebstrap") is None:
        raise BackendError(
            "mmdebstrap is not installed",
            hint="run bin/setup-incus (or apt-get install mmdebstrap)",
        )
    base = layer.base.data
    apt_cache.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="plex-mmdebstrap-", dir=out.parent))
    # Each build syncs its downloads into its own folder, merged into the shared cache after:
    # parallel role builds must not write the same .deb at the same time.
    fresh = work / "debs"
    fresh.mkdir()
    tmp_out = work / "rootfs.tar"
    hooks: list[str] = [
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives',
        f"--setup-hook=sync-in {shlex.quote(str(apt_cache))} /var/cache/apt/archives",
    ]
    if artifact_paths:
        hooks.append(f'--customize-hook=mkdir -p "$1"{ARTIFACT_DIR}')
    for artifact, commands in layer.artifacts:
        src = artifact_paths[artifact.name]
        dest = f"{ARTIFACT_DIR}/{artifact.filename}"
        hooks.append(f"--customize-hook=copy-in {shlex.quote(str(src))} {ARTIFACT_DIR}")
        for cmd in commands:
            hooks.append(_chroot_hook(cmd.replace("{path}", shlex.quote(dest))))
    for cmd in layer.commands:
        hooks.append(_chroot_hook(cmd))
    hooks += [
        f'--customize-hook=rm -rf "$1"{ARTIFACT_DIR}',
        f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(fresh))}",
        # Keep images small: package lists and .debs are not needed on a node.
        '--customize-hook=rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
        # mmdebstrap copies the build host's resolv.conf and hostname into the rootfs: a node
        # must never carry them (the plex layer writes resolv.conf from the plex's network.dns;
        # Incus templates the hostname).
        '--customize-hook=rm -f "$1"/etc/resolv.conf "$1"/etc/hostname',
    ]
    argv = [
        "mmdebstrap",
        f"--variant={base.get('variant', 'apt')}",
        f"--components={','.join(base.get('components', ['main']))}",
        f"--include={','.join(layer.packages)}",
        "--format=tar",
        *hooks,
        str(base.get("suite", "bookworm")),
        str(tmp_out),
        mirror_for(layer),
    ]
    try:
        run(argv, env={"TMPDIR": str(work)})
        _merge_cache(fresh, apt_cache)
        tmp_out.replace(out)
    except CommandError as e:
        raise BackendError(
            f"mmdebstrap failed for package layer {layer.digest[:12]}: {_last_error(e.output)}",
            hint=f"mirror {mirror_for(layer)}; set {MIRROR_ENV} to use another",
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _chroot_hook(cmd: str) -> str:
    return f'--customize-hook=chroot "$1" /bin/sh -ec {shlex.quote(cmd)}'


def _merge_cache(fresh: Path, cache: Path) -> None:
    for deb in fresh.glob("*.deb"):
        target = cache / deb.name
        if not target.exists():
            # Per thread too: role bakes run in parallel and merge the same new packages.
            tmp = cache / f".{deb.name}.{os.getpid()}.{threading.get_ident()}"
            shutil.copy2(deb, tmp)
            tmp.replace(target)


def _last_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith(("E:", "error", "W: "))]
    return (lines or output.strip().splitlines() or ["no output"])[-1]


def metadata_tarball(out: Path, description: str, properties: dict[str, str]) -> Path:
    """An Incus image metadata tarball: metadata.yaml and a hostname template.

    The template makes /etc/hostname follow the instance name on create and copy, so one image
    serves every node of a role.
    """
    meta = {
        "architecture": os.uname().machine,
        "creation_date": int(time.time()),
        "properties": {"description": description, **properties},
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
        },
    }
    files = {
        "metadata.yaml": yaml.safe_dump(meta, sort_keys=True).encode(),
        "templates/hostname.tpl": b"{{ instance.name }}\n",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = meta["creation_date"]  # type: ignore[assignment]
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out
