"""The files a MicroOS VM image holds: the plex layer's, plus what only MicroOS needs, all
extracted inside a `transactional-update` transaction. Pure.

`/usr/local` is its own btrfs subvolume and is NOT bind-mounted into a transaction (tukit mounts
/var/log, /var/cache, a few /var/lib dirs, /root, /boot/writable and BINDDIRS=/opt:
openSUSE/transactional-update lib/Transaction.cpp, etc/tukit.conf): what a transaction writes
there is hidden behind the subvolume after reboot. install.sh's tar method falls back to
`/opt/rke2`, and so does plex; plex's own node files go to /usr/libexec and /etc, and
`check_transaction_paths` refuses a files tarball that writes anywhere a transaction's writes
do not persist.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import Sequence

from plex.bake.recipe import (
    NODES_DIR,
    Recipe,
    RenderedFile,
)
from plex.bake.windows import (
    RebootMethod,
    assign_windows,
    rebootmgr_conf,
    transactional_update_conf,
)
from plex.errors import ConfigError
from plex.model import topology
from plex.model.plex import Plex, Role
from plex.plexfile.trust import TRUST_DIR

RKE2_PREFIX = "/opt/rke2"


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


# openSUSE's trust store: update-ca-certificates reads the anchors in /etc/pki/trust/anchors
# (openSUSE/ca-certificates: ca-certificates.path watches it, the *.run hooks `trust extract`
# into /var/lib/ca-certificates, which tukit bind-mounts into a transaction). Debian's
# /usr/local/share/ca-certificates is the /usr/local subvolume on MicroOS: lost there.
SUSE_ANCHORS = "/etc/pki/trust/anchors"


def suse_trust(files: Sequence[RenderedFile]) -> list[RenderedFile]:
    """The recipe's trust-store CAs (tls.ca_files, Debian's directory) moved to openSUSE's."""
    prefix = f"{TRUST_DIR}/"
    return [
        dataclasses.replace(f, path=f"{SUSE_ANCHORS}/plex-{f.path.removeprefix(prefix)}")
        if f.path.startswith(prefix)
        else f
        for f in files
    ]


def vm_files(plex: Plex, recipe: Recipe) -> tuple[RenderedFile, ...]:
    """Everything the files tarball holds: the recipe's files (CAs where openSUSE reads them),
    then the extras (they win). The tarball is extracted inside a transaction: every path must
    persist there."""
    files = {f.path: f for f in suse_trust(recipe.layer.files)}
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
