"""The Packer template of a MicroOS VM image, from the same role recipe as the containers. Pure.

JSON (not HCL) so that Debian's Packer 1.6 and current releases read the same file. One qemu
builder boots the official MicroOS OpenStack-Cloud qcow2 with a NoCloud seed CD and the bake's
throwaway SSH key; shell provisioners then install the role:

    wait for cloud-init -> upload (plex files tarball, release artifacts)
    -> packages (transactional-update pkg install) -> artifacts (RKE2: tarball into /opt/rke2,
    or the rancher RPM repository) -> plex files, services, validation, reboot policy
    -> cleanup (cloud-init clean, machine-id, the throwaway key)

MicroOS facts this relies on (see /work/shared/reference/formats.md, "openSUSE MicroOS"):
- `/` is read-only; each `transactional-update --continue` call builds a new snapshot on top of
  the previous one, and the newest becomes the default: the image boots into it without a
  reboot during the build.
- Inside a transaction only some directories are the live ones: /var/cache is bind-mounted
  (so uploads go there), /opt and most of /var are not (so /opt/rke2 and /var/lib/... are
  written from the live system, outside any transaction), /tmp is a fresh tmpfs.
- `/usr/local` is its own btrfs subvolume and is NOT bind-mounted into a transaction (tukit
  mounts /var/log, /var/cache, a few /var/lib dirs, /root, /boot/writable and BINDDIRS=/opt:
  openSUSE/transactional-update lib/Transaction.cpp, etc/tukit.conf): what a transaction writes
  there is hidden behind the subvolume after reboot. install.sh's tar method falls back to
  `/opt/rke2`, and so does plex; plex's own node files go to /usr/libexec and /etc, and
  `check_transaction_paths` refuses a files tarball (extracted inside a transaction) that
  writes anywhere a transaction's writes do not persist.

Every path the template names comes from `BuildPaths`; `vm_inputs` renders the template with
placeholder paths and checksum, so the VM digest covers everything that shapes the image and
nothing that changes from one build to the next.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plex.bake.bases import Qcow2Base, Rke2Install
from plex.bake.recipe import (
    NODES_DIR,
    RECIPE_FORMAT,
    Recipe,
    RenderedFile,
    digest_of,
)
from plex.bake.seed import SEED_LABEL, build_seed
from plex.bake.windows import (
    RebootMethod,
    assign_windows,
    rebootmgr_conf,
    transactional_update_conf,
)
from plex.errors import ConfigError
from plex.model import topology
from plex.model.plex import Plex, Role

VM_FORMAT = 1  # bump when the meaning of a VM template changes, to rebuild every VM image
MIN_PACKER = "1.6.0"
BUILD_DIR = "/var/cache/plex-build"  # bind-mounted into transactional-update's chroot
RKE2_PREFIX = "/opt/rke2"
RANCHER_RPM = "https://rpm.rancher.io"
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


# ---------------------------------------------------------------------------------------------
# Files: the plex layer plus what only a MicroOS image needs


def reboot_method(role: Role) -> RebootMethod:
    # Kube nodes must drain before a reboot, which only kured does; an lb (or registry) node
    # reboots on its own, inside its window.
    return RebootMethod.KURED if role.is_kube else RebootMethod.REBOOTMGR


def extra_files(plex: Plex, role: Role) -> tuple[RenderedFile, ...]:
    method = reboot_method(role)
    out = [
        RenderedFile(
            "/etc/transactional-update.conf", transactional_update_conf(method).encode(), 0o644
        )
    ]
    if method is RebootMethod.REBOOTMGR:
        names = [n.name for n in topology.nodes(plex, reserved=True) if n.role is role]
        for node, window in assign_windows(plex.reboot_windows, names).items():
            text = rebootmgr_conf(window).encode()
            # rebootmgr 2 reads /etc/rebootmgr.conf, rebootmgr 3 /etc/rebootmgr/rebootmgr.conf.
            for path in ("/etc/rebootmgr.conf", "/etc/rebootmgr/rebootmgr.conf"):
                out.append(RenderedFile(f"{NODES_DIR}/{node}{path}", text, 0o644))
    if role.is_kube:
        out.append(
            RenderedFile(
                "/etc/profile.d/plex-rke2.sh",
                b"# Written by plex: RKE2 and its kubectl on the PATH of login shells.\n"
                b'export PATH="$PATH:' + RKE2_PREFIX.encode() + b'/bin:/var/lib/rancher/rke2/bin"\n'
                b"export KUBECONFIG=/etc/rancher/rke2/rke2.yaml\n",
                0o644,
            )
        )
    return tuple(out)


# Where a write made inside a transaction is still there after reboot: the new snapshot's own
# tree (/etc and /usr, except the /usr/local subvolume) and the live directories tukit
# bind-mounts into it (openSUSE/transactional-update lib/Transaction.cpp: /var/log, /var/cache,
# /var/lib/{zypp,ca-certificates,alternatives,selinux}, /root, /boot/writable; etc/tukit.conf
# BINDDIRS: /opt). Everything else under /var is the /var subvolume, hidden at boot.
TRANSACTION_KEEPS = (
    "/etc/",
    "/usr/",
    "/opt/",
    "/root/",
    "/boot/writable/",
    "/var/log/",
    "/var/cache/",
    "/var/lib/zypp/",
    "/var/lib/ca-certificates/",
    "/var/lib/alternatives/",
    "/var/lib/selinux/",
)
TRANSACTION_HIDES = ("/usr/local/",)


def lost_in_transaction(path: str) -> bool:
    """Would a file written at `path` inside a transaction be gone after reboot?"""
    return path.startswith(TRANSACTION_HIDES) or not path.startswith(TRANSACTION_KEEPS)


def check_transaction_paths(files: Sequence[RenderedFile], where: str) -> None:
    lost = [f.path for f in files if lost_in_transaction(f.path)]
    if lost:
        raise ConfigError(
            where,
            "files",
            f"{', '.join(lost)}: written inside a "
            "transactional-update transaction, hidden after reboot on MicroOS",
            hint="install node files under /etc, /usr (not /usr/local) or /opt",
        )


def vm_files(plex: Plex, recipe: Recipe) -> tuple[RenderedFile, ...]:
    """Everything the files tarball holds: the recipe's files, then the extras (they win).
    The tarball is extracted inside a transaction: every path must persist there."""
    files = {f.path: f for f in recipe.layer.files}
    files.update({f.path: f for f in extra_files(plex, recipe.role)})
    out = tuple(sorted(files.values(), key=lambda f: f.path))
    check_transaction_paths(out, recipe.sources[-1] if recipe.sources else recipe.role.value)
    return out


def files_tarball(files: Sequence[RenderedFile]) -> bytes:
    """A reproducible tar of `files` (root-owned, mtime 0, parents created by tar -x)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size = len(f.content)
            info.mode = f.mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(f.content))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The template


def _q(*words: str) -> str:
    return shlex.join(words)


def _transaction(script: Sequence[str]) -> str:
    """A shell line running `script` inside the next snapshot."""
    return _q(
        "transactional-update",
        "--non-interactive",
        "--continue",
        "run",
        "/bin/sh",
        "-ec",
        "\n".join(script),
    )


def _step(name: str, lines: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "inline": [_q("echo", f"plex-step: {name}"), *lines], **extra}


def _upload(source: str, name: str) -> dict[str, Any]:
    return {"type": "file", "source": source, "destination": f"{BUILD_DIR}/{name}"}


def rke2_rpm_version(version: str) -> str:
    """`v1.31.4+rke2r1` -> `1.31.4~rke2r1`, as install.sh names the RPM version."""
    return re.sub(r"[+-]", "~", version.removeprefix("v"))


def rke2_rpm_repo(version: str) -> str:
    """The zypper repo file install.sh writes for MicroOS (stable channel of the minor)."""
    major_minor = ".".join(version.removeprefix("v").split(".")[:2])
    return (
        "[rancher-rke2-common-stable]\n"
        "name=Rancher RKE2 Common (stable)\n"
        f"baseurl={RANCHER_RPM}/rke2/stable/common/microos/noarch\n"
        "enabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
        f"gpgkey={RANCHER_RPM}/public.key\n\n"
        f"[rancher-rke2-{major_minor}-stable]\n"
        f"name=Rancher RKE2 {major_minor} (stable)\n"
        f"baseurl={RANCHER_RPM}/rke2/stable/{major_minor}/microos/x86_64\n"
        "enabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n"
        f"gpgkey={RANCHER_RPM}/public.key\n"
    )


def _artifact_steps(recipe: Recipe, base: Qcow2Base) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    role = recipe.role
    for artifact, install in recipe.package.artifacts:
        path = f"{BUILD_DIR}/{artifact.filename}"
        if artifact.name == "rke2" and base.rke2_install is Rke2Install.TAR:
            units = f"{BUILD_DIR}/units"
            steps.append(
                _step(
                    "rke2 (tarball into /opt/rke2)",
                    [
                        # Live system, outside any transaction: /opt is its own writable subvolume.
                        _q("mkdir", "-p", RKE2_PREFIX, units, "/var/lib/rancher/rke2/agent/images"),
                        _q("tar", "-xzf", path, "-C", RKE2_PREFIX),
                        # The units name /usr/local; the files step moves them to
                        # /etc/systemd/system.
                        f"for u in {RKE2_PREFIX}/lib/systemd/system/rke2-*.service; do "
                        f'sed \'s|/usr/local|{RKE2_PREFIX}|g\' "$u" > {units}/"${{u##*/}}"; done',
                        _q("test", "-s", f"{units}/rke2-{role.value}.service"),
                    ],
                )
            )
        elif artifact.name == "rke2":
            repo = rke2_rpm_repo(artifact.version)
            package = f"rke2-{role.value}-{rke2_rpm_version(artifact.version)}"
            steps.append(
                _step(
                    "rke2 (rancher RPM repository)",
                    [
                        _q("mkdir", "-p", "/var/lib/rancher/rke2/agent/images"),
                        _transaction(
                            [
                                f"printf '%s' {shlex.quote(repo)}"
                                " > /etc/zypp/repos.d/rancher-rke2.repo",
                                # rke2-selinux's %pre needs it; /var/lib/rpm-state is not
                                # bind-mounted, so it is made inside the transaction, as
                                # rancher/rke2 install.sh does (do_install_rpm).
                                _q("mkdir", "-p", "/var/lib/rpm-state"),
                                _q(
                                    "zypper",
                                    "--non-interactive",
                                    "--gpg-auto-import-keys",
                                    "install",
                                    package,
                                ),
                            ]
                        ),
                    ],
                )
            )
        else:
            steps.append(
                _step(
                    f"artifact {artifact.name}",
                    [
                        _transaction([cmd.replace("{path}", shlex.quote(path)) for cmd in install]),
                    ],
                )
            )
    return steps


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

    uploads: list[dict[str, Any]] = [_upload(paths.files_tar, FILES_TAR)]
    for artifact, _ in recipe.package.artifacts:
        if artifact.name == "rke2" and base.rke2_install is Rke2Install.RPM:
            continue  # the RPM repository provides it
        uploads.append(_upload(artifact_files[artifact.name], artifact.filename))

    packages = list(dict.fromkeys((*recipe.package.packages, *MICROOS_PACKAGES)))
    package_steps: list[dict[str, Any]] = [
        _step(
            "packages",
            [
                _q(
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
        package_steps.append(_step("package commands", [_transaction(recipe.package.commands)]))

    method = reboot_method(role)
    files_script = [_q("tar", "-xpf", f"{BUILD_DIR}/{FILES_TAR}", "-C", "/")]
    if (
        role.is_kube
        and base.rke2_install is Rke2Install.TAR
        and any(a.name == "rke2" for a, _ in recipe.package.artifacts)
    ):
        files_script.append(f"install -m 0644 {BUILD_DIR}/units/*.service /etc/systemd/system/")
    files_script += list(recipe.layer.validate)
    services = _services(recipe)
    if services:
        files_script.append(_q("systemctl", "enable", *services))
    files_script.append(
        _q(
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

    cleanup = _step(
        "cleanup",
        [
            # Live system: /var and /root are subvolumes outside the snapshots.
            "cloud-init clean --logs",
            _q("rm", "-rf", BUILD_DIR),
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
            _step(
                "wait for cloud-init",
                [
                    # 2 = finished with recoverable errors (for example an unknown datasource key).
                    "cloud-init status --wait >/dev/null || [ $? -eq 2 ]",
                    _q("mkdir", "-p", BUILD_DIR),
                ],
            ),
            *uploads,
            *package_steps,
            *_artifact_steps(recipe, base),
            _step(
                f"plex files ({len(recipe.layer.files)}), services, reboot via {method.value}",
                [_transaction(files_script)],
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
