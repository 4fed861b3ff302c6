"""The package layer of a non-Debian (or remote) base, built in a transient Incus instance.

For bases that mmdebstrap cannot make on the host (an Incus image server alias such as
`images:opensuse/tumbleweed/cloud`): launch the base on the plex's network (packages need the
distribution's mirrors), install the role's packages with the family's package manager, push
and install the release artifacts, run the package commands, then publish the result as the
package layer image. The instance is always removed; nothing is published on failure.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable
from pathlib import Path

from plex.backends.incus.protocol import Incus
from plex.bake.recipe import ARTIFACT_DIR, PackageLayer
from plex.errors import BackendError, ConfigError, ConfigErrors
from plex.model import owner
from plex.model.image import package_alias
from plex.model.plex import Plex
from plex.services.progress import unreported

# How each OS family installs packages; a base definition may override it with `install:`.
INSTALL = {
    "debian": "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
    "apt-get install -y -q --no-install-recommends {packages} && apt-get clean",
    "suse": "zypper --non-interactive --gpg-auto-import-keys install --no-recommends "
    "{packages} && zypper clean --all",
    "alpine": "apk add --no-cache {packages}",
}
# The instance has networking once this succeeds (its DHCP client and resolver are up).
WAIT_NETWORK = (
    "for i in $(seq 120); do ip -4 route | grep -q '^default' && exit 0; "
    "sleep 1; done; echo 'no default route after 120s' >&2; exit 1"
)


def image_source(layer: PackageLayer) -> dict[str, str]:
    """The Incus image source of a remote base definition (images/<name>.yaml)."""
    data = layer.base.data
    file = f"images/{layer.base.name}.yaml"
    if layer.base.kind != "incus-remote":
        raise ConfigErrors(
            [
                ConfigError(
                    file,
                    "kind",
                    f"'{layer.base.kind}' bases are not built in an instance (use incus-remote)",
                )
            ]
        )
    missing = [k for k in ("server", "alias") if not data.get(k)]
    if missing:
        raise ConfigErrors([ConfigError(file, missing[0], "required for an incus-remote base")])
    return {
        "type": "image",
        "mode": "pull",
        "server": str(data["server"]),
        "protocol": str(data.get("protocol", "simplestreams")),
        "alias": str(data["alias"]),
    }


def install_command(layer: PackageLayer) -> str:
    template = layer.base.data.get("install") or INSTALL.get(layer.base.family)
    if template is None:
        raise ConfigErrors(
            [
                ConfigError(
                    f"images/{layer.base.name}.yaml",
                    "install",
                    f"no package manager known for family '{layer.base.family}': set install:",
                )
            ]
        )
    return str(template).format(packages=" ".join(shlex.quote(p) for p in layer.packages))


def build_in_instance(
    incus: Incus,
    plex: Plex,
    layer: PackageLayer,
    artifact_paths: dict[str, Path],
    bake_id: str,
    report: Callable[[str], None] = unreported,
    check: Callable[[], None] = lambda: None,
) -> str:
    """Build and publish the package layer; returns its image fingerprint."""
    name = f"plex-build-{plex.name}-pkg-{uuid.uuid4().hex[:6]}"
    source = image_source(layer)
    published: str | None = None

    def run(argv: list[str], what: str) -> None:
        res = incus.exec(name, argv)
        if res.returncode != 0:
            tail = (res.output.splitlines() or ["no output"])[-1]
            raise BackendError(
                f"package layer {layer.digest[:12]}: {what} failed in "
                f"{name} (exit {res.returncode}): {tail}"
            )

    try:
        report(f"launch {source['alias']}")
        incus.create_instance(
            name,
            image=source["alias"],
            source=source,
            profiles=[],
            config={owner.PLEX: plex.name, owner.BUILD: bake_id},
            devices={
                "root": {"type": "disk", "path": "/", "pool": plex.incus.pool},
                "eth0": {
                    "type": "nic",
                    "network": plex.incus.network,
                    "name": plex.network.interface,
                },
            },
        )
        incus.start(name)
        run(["/bin/sh", "-c", WAIT_NETWORK], "waiting for the network")
        check()
        report(f"install {len(layer.packages)} packages")
        run(["/bin/sh", "-ec", install_command(layer)], "package install")
        check()
        for artifact, commands in layer.artifacts:
            dest = f"{ARTIFACT_DIR}/{artifact.filename}"
            run(["mkdir", "-p", ARTIFACT_DIR], "mkdir")
            incus.push_file(name, dest, artifact_paths[artifact.name].read_bytes(), mode=0o644)
            for cmd in commands:
                run(
                    ["/bin/sh", "-ec", cmd.replace("{path}", shlex.quote(dest))],
                    f"installing {artifact.name}",
                )
        for cmd in layer.commands:
            run(["/bin/sh", "-ec", cmd], "package command")
        run(["rm", "-rf", ARTIFACT_DIR], "cleanup")
        check()
        report("publish package layer")
        incus.stop(name, force=True)
        published = incus.publish(
            name,
            properties={
                "plex.layer": "package",
                "plex.package_digest": layer.digest,
                "description": f"plex package layer {layer.digest[:12]} ({layer.base.name})",
            },
        )
        check()
        incus.set_alias(package_alias(layer.digest), published, "plex package layer")
        return published
    except BaseException:
        if published is not None:
            incus.delete_image(published)
        raise
    finally:
        incus.delete_instance(name)
