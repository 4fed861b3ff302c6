"""The shell steps of a MicroOS Packer build: transactions, uploads, the RKE2 install. Pure.

Each `transactional-update --continue` call builds a new snapshot on top of the previous one;
inside it only some directories are the live ones (/var/cache is bind-mounted, so uploads go
there; /opt and most of /var are not, so /opt/rke2 and /var/lib/... are written from the live
system, outside any transaction).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

from plex.bake.bases import Qcow2Base, Rke2Install
from plex.bake.recipe import (
    Recipe,
)
from plex.bake.vm_files import RKE2_PREFIX

BUILD_DIR = "/var/cache/plex-build"  # bind-mounted into transactional-update's chroot
RANCHER_RPM = "https://rpm.rancher.io"


def q(*words: str) -> str:
    return shlex.join(words)


def transaction(script: Sequence[str]) -> str:
    """A shell line running `script` inside the next snapshot."""
    return q(
        "transactional-update",
        "--non-interactive",
        "--continue",
        "run",
        "/bin/sh",
        "-ec",
        "\n".join(script),
    )


def checks_offline(commands: Sequence[str], interface: str) -> list[str]:
    """The recipe's checks in a network namespace of their own that holds an `interface`.

    `keepalived -t` refuses a config whose interface does not exist, and the build VM's NIC has
    its firmware name (enp5s0-style): only at a node's first boot does cloud-init rename the NIC
    matched by its MAC to `interface`. The checks need no network, so they see just that name."""
    if not commands:
        return []
    # A veth, not a dummy: both are modules on MicroOS, and veth is what this host has built in.
    link = q("ip", "link", "add", interface, "type", "veth", "peer", "name", "plexcheck0")
    script = "\n".join([link, *commands])
    return [q("unshare", "--net", "/bin/sh", "-ec", script)]


def step(name: str, lines: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"type": "shell", "inline": [q("echo", f"plex-step: {name}"), *lines], **extra}


def upload(source: str, name: str) -> dict[str, Any]:
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


def artifact_steps(recipe: Recipe, base: Qcow2Base) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    role = recipe.role
    for artifact, install in recipe.package.artifacts:
        path = f"{BUILD_DIR}/{artifact.filename}"
        if artifact.name == "rke2" and base.rke2_install is Rke2Install.TAR:
            units = f"{BUILD_DIR}/units"
            steps.append(
                step(
                    "rke2 (tarball into /opt/rke2)",
                    [
                        # Live system, outside any transaction: /opt is its own writable subvolume.
                        q("mkdir", "-p", RKE2_PREFIX, units, "/var/lib/rancher/rke2/agent/images"),
                        q("tar", "-xzf", path, "-C", RKE2_PREFIX),
                        # The units name /usr/local; the files step moves them to
                        # /etc/systemd/system.
                        f"for u in {RKE2_PREFIX}/lib/systemd/system/rke2-*.service; do "
                        f'sed \'s|/usr/local|{RKE2_PREFIX}|g\' "$u" > {units}/"${{u##*/}}"; done',
                        q("test", "-s", f"{units}/rke2-{role.value}.service"),
                    ],
                )
            )
        elif artifact.name == "rke2":
            repo = rke2_rpm_repo(artifact.version)
            package = f"rke2-{role.value}-{rke2_rpm_version(artifact.version)}"
            steps.append(
                step(
                    "rke2 (rancher RPM repository)",
                    [
                        q("mkdir", "-p", "/var/lib/rancher/rke2/agent/images"),
                        transaction(
                            [
                                f"printf '%s' {shlex.quote(repo)}"
                                " > /etc/zypp/repos.d/rancher-rke2.repo",
                                # rke2-selinux's %pre needs it; /var/lib/rpm-state is not
                                # bind-mounted, so it is made inside the transaction, as
                                # rancher/rke2 install.sh does (do_install_rpm).
                                q("mkdir", "-p", "/var/lib/rpm-state"),
                                q(
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
                step(
                    f"artifact {artifact.name}",
                    [
                        transaction([cmd.replace("{path}", shlex.quote(path)) for cmd in install]),
                    ],
                )
            )
    return steps
