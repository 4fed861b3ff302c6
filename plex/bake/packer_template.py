"""The Packer template of a MicroOS VM image, from the same role recipe as the containers. Pure.

JSON (not HCL) so that Debian's Packer 1.6 and current releases read the same file. One qemu
builder boots the official MicroOS OpenStack-Cloud qcow2 with a NoCloud seed CD and the bake's
throwaway SSH key; shell provisioners then install the role:

    wait for cloud-init -> upload (plex files tarball, release artifacts)
    -> packages (transactional-update pkg install) -> artifacts (RKE2: tarball into /opt/rke2,
    or the rancher RPM repository) -> plex files, services, validation, reboot policy
    -> cleanup (cloud-init clean, machine-id, the throwaway key)

The steps are in `packer_steps`, the files the image holds (and the MicroOS transaction rules
they obey: see /work/shared/reference/formats.md, "openSUSE MicroOS") in `vm_files`.

Every path the template names comes from `BuildPaths`; `vm_inputs` renders the template with
placeholder paths and checksum, so the VM digest covers everything that shapes the image and
nothing that changes from one build to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from plex.bake.bases import Qcow2Base, Rke2Install
from plex.bake.packer_steps import (
    BUILD_DIR,
    artifact_steps,
    checks_offline,
    q,
    step,
    transaction,
    upload,
)
from plex.bake.recipe import (
    RECIPE_FORMAT,
    Recipe,
    digest_of,
)
from plex.bake.seed import SEED_LABEL, build_seed
from plex.bake.vm_files import SUSE_ANCHORS, extra_files, reboot_method, vm_files
from plex.bake.windows import (
    RebootMethod,
)
from plex.model.plex import Plex, Role

VM_FORMAT = 1  # bump when the meaning of a VM template changes, to rebuild every VM image
MIN_PACKER = "1.6.0"
PLACEHOLDER_CHECKSUM = "sha256:" + "0" * 64
PLACEHOLDER_KEY = "ssh-ed25519 AAAAplexplaceholder plex-build"
FILES_TAR = "plex-files.tar"

# The recipes name Debian's units; MicroOS calls some of them differently.
# The recipes configure the NIC with systemd-networkd (network.j2), which MicroOS does not ship
# by default; the distribution's own network managers are disabled in the image.
MICROOS_PACKAGES = ("systemd-network",)
OTHER_NETWORK_MANAGERS = ("NetworkManager.service", "wicked.service")


@dataclass(frozen=True)
class BuildPaths:
    """Host-side paths of one build (all absolute)."""

    output_dir: str  # Packer creates it; must not exist
    seed_files: tuple[str, ...]  # user-data, meta-data
    ssh_key: str  # the throwaway private key
    files_tar: str  # the plex layer's files (plus the VM extras), see files_tarball()
    artifacts: tuple[tuple[str, str], ...]  # (artifact name, local verified file)

    @classmethod
    def placeholder(cls, recipe: Recipe) -> BuildPaths:
        """Stable stand-ins: for the digest and golden files."""
        return cls(
            output_dir="/build/output",
            seed_files=("/build/seed/user-data", "/build/seed/meta-data"),
            ssh_key="/build/id_ed25519",
            files_tar=f"/build/{FILES_TAR}",
            artifacts=tuple(
                (a.name, f"/build/artifacts/{a.filename}") for a, _ in recipe.package.artifacts
            ),
        )


@dataclass(frozen=True)
class VmSpec:
    """The build VM. The disk size is the role's disk: the image is as large as its nodes'."""

    disk_mib: int
    cpus: int = 2
    memory_mib: int = 2048

    @classmethod
    def for_role(cls, plex: Plex, role: Role) -> VmSpec:
        rc = plex.roles.get(role)
        return cls(disk_mib=size_mib(rc.disk) if rc is not None else 8192)


_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def size_mib(size: str) -> int:
    """`60GiB` -> 61440 (rounded up to whole MiB)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?i?B)", size)
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"not a size: {size!r}")
    return -(-int(float(m.group(1)) * _UNITS[m.group(2)]) // 2**20)


def _services(recipe: Recipe) -> list[str]:
    # The recipe already names the units of the image's family (bake/common.yaml services).
    return list(recipe.layer.services)


def packer_template(
    plex: Plex,
    recipe: Recipe,
    paths: BuildPaths,
    iso_checksum: str,
    spec: VmSpec,
    iso_url: str | None = None,
) -> dict[str, Any]:
    """The Packer template (a JSON-able dict) that bakes `recipe` into a MicroOS qcow2.

    `iso_url` defaults to the base's URL; a bake passes the verified local copy instead.
    """
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", iso_checksum):
        # `file:<url>` would make `packer validate` fetch the checksum: plex passes the digest
        # it verified itself, so validation works offline.
        raise ValueError(f"iso_checksum must be sha256:<hex>, not {iso_checksum!r}")
    base = Qcow2Base.from_base(recipe.package.base)
    role = recipe.role
    artifact_files = dict(paths.artifacts)
    missing = [a.name for a, _ in recipe.package.artifacts if a.name not in artifact_files]
    if missing:
        raise ValueError(f"no local file for artifacts {missing}")

    builder: dict[str, Any] = {
        "type": "qemu",
        "name": f"{plex.name}-{role.value}",
        "iso_url": iso_url or base.url,
        "iso_checksum": iso_checksum,
        "disk_image": True,
        "format": "qcow2",
        "disk_size": f"{spec.disk_mib}M",
        "disk_interface": "virtio",
        "disk_compression": True,
        "net_device": "virtio-net",
        "accelerator": "kvm",
        "headless": True,
        "cpus": spec.cpus,
        "memory": spec.memory_mib,
        "output_directory": paths.output_dir,
        "vm_name": f"{plex.name}-{role.value}.qcow2",
        "cd_files": list(paths.seed_files),
        "cd_label": SEED_LABEL,
        "boot_wait": "5s",
        "communicator": "ssh",
        "ssh_username": "root",
        "ssh_private_key_file": paths.ssh_key,
        "ssh_timeout": "20m",
        "shutdown_command": "systemctl poweroff",
        "shutdown_timeout": "5m",
    }

    uploads: list[dict[str, Any]] = [upload(paths.files_tar, FILES_TAR)]
    for artifact, _ in recipe.package.artifacts:
        if artifact.name == "rke2" and base.rke2_install is Rke2Install.RPM:
            continue  # the RPM repository provides it
        uploads.append(upload(artifact_files[artifact.name], artifact.filename))

    packages = list(dict.fromkeys((*recipe.package.packages, *MICROOS_PACKAGES)))
    package_steps: list[dict[str, Any]] = [
        step(
            "packages",
            [
                q(
                    "transactional-update",
                    "--non-interactive",
                    "--continue",
                    "pkg",
                    "install",
                    *packages,
                ),
            ],
        )
    ]
    if recipe.package.commands:
        package_steps.append(step("package commands", [transaction(recipe.package.commands)]))

    method = reboot_method(role)
    files_script = [q("tar", "-xpf", f"{BUILD_DIR}/{FILES_TAR}", "-C", "/")]
    if (
        role.is_kube
        and base.rke2_install is Rke2Install.TAR
        and any(a.name == "rke2" for a, _ in recipe.package.artifacts)
    ):
        files_script.append(f"install -m 0644 {BUILD_DIR}/units/*.service /etc/systemd/system/")
    files_script += checks_offline(recipe.layer.validate, plex.network.interface)
    if any(f.path.startswith(f"{SUSE_ANCHORS}/") for f in vm_files(plex, recipe)):
        # Inside the transaction: /etc/ssl/certs is the snapshot's, /var/lib/ca-certificates
        # a bind mount; both persist.
        files_script.append("update-ca-certificates")
    services = _services(recipe)
    if services:
        files_script.append(q("systemctl", "enable", *services))
    files_script.append(
        q(
            "systemctl",
            "enable" if method is RebootMethod.REBOOTMGR else "disable",
            "rebootmgr.service",
        )
    )
    # A file test, not `systemctl cat`: inside the transaction no systemd manager answers.
    files_script.append(
        "for unit in " + " ".join(OTHER_NETWORK_MANAGERS) + "; do "
        'if [ -e "/usr/lib/systemd/system/$unit" ]; then systemctl disable "$unit"; fi; '
        "done"
    )
    files_script += list(recipe.layer.commands)
    # Every node gets its own machine-id on first boot (an empty file, not a missing one, makes
    # systemd treat that boot as the first), and its own host keys at deploy. The recipes say
    # so too; a recipe that forgets must not leak the build VM's into every node.
    for cmd in (
        "truncate -s 0 /etc/machine-id",
        "rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub",
    ):
        if cmd not in files_script:
            files_script.append(cmd)

    cleanup = step(
        "cleanup",
        [
            # Live system: /var and /root are subvolumes outside the snapshots.
            "cloud-init clean --logs",
            q("rm", "-rf", BUILD_DIR),
            "rm -f /root/.ssh/authorized_keys /var/lib/dbus/machine-id",
            "sync",
        ],
    )

    return {
        "_comment": f"Written by plex for {plex.name}/{role.value}; "
        "regenerated on every bake, do not edit.",
        "min_packer_version": MIN_PACKER,
        "builders": [builder],
        "provisioners": [
            step(
                "wait for cloud-init",
                [
                    # 2 = finished with recoverable errors (for example an unknown datasource key).
                    "cloud-init status --wait >/dev/null || [ $? -eq 2 ]",
                    q("mkdir", "-p", BUILD_DIR),
                ],
            ),
            *uploads,
            *package_steps,
            *artifact_steps(recipe, base),
            step(
                f"plex files ({len(recipe.layer.files)}), services, reboot via {method.value}",
                [transaction(files_script)],
            ),
            cleanup,
        ],
    }


def vm_inputs(plex: Plex, recipe: Recipe) -> dict[str, Any]:
    """What the VM image's digest covers: the role recipe (both layers), the MicroOS extras,
    the template and the seed, with the per-build paths, key and base checksum left out.

    The base qcow2's checksum is left out on purpose, like the Debian mirror's package
    versions: a rolling upstream does not invalidate a cached image (rebuild with a new recipe
    or `plex bake --force`-style invalidation instead), and a no-op bake needs no network.
    """
    paths = BuildPaths.placeholder(recipe)
    return {
        "format": VM_FORMAT,
        "recipe_format": RECIPE_FORMAT,
        "recipe": recipe.digest,
        "extras": {
            f.path: {"sha256": f.sha256, "mode": f"{f.mode:04o}"}
            for f in extra_files(plex, recipe.role)
        },
        "template": packer_template(
            plex, recipe, paths, PLACEHOLDER_CHECKSUM, VmSpec.for_role(plex, recipe.role)
        ),
        "seed": build_seed(plex.name, recipe.role.value, PLACEHOLDER_KEY).files(),
    }


def vm_digest(plex: Plex, recipe: Recipe) -> str:
    return digest_of(vm_inputs(plex, recipe))
