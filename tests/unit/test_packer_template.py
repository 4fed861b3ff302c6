"""The MicroOS Packer template: golden templates, digest semantics, install methods, tarball.

Recipes are built from the repo's plex files, bake/ recipes and images/ with a fixed identity
and fixed artifact checksums (no network). Regenerate the golden files with
PLEX_UPDATE_GOLDEN=1 and review the diff by eye.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plex.bake.bases import Qcow2Base
from plex.bake.context import template_context
from plex.bake.packer_steps import rke2_rpm_version
from plex.bake.packer_template import (
    PLACEHOLDER_CHECKSUM,
    BuildPaths,
    VmSpec,
    packer_template,
    size_mib,
    vm_digest,
)
from plex.bake.recipe import (
    BaseImage,
    Recipe,
    RenderedFile,
    ResolvedArtifact,
    load_base_image,
    load_role_recipe,
    make_recipe,
)
from plex.bake.render import Renderer
from plex.bake.vm_files import check_transaction_paths, files_tarball, lost_in_transaction, vm_files
from plex.errors import ConfigError, ConfigErrors
from plex.model.identity import HostKey, compute_identity
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "packer"
MICROOS = "opensuse-microos"


class FixedKeyGen:
    """Deterministic identity: golden files must not change from run to run."""

    def __init__(self) -> None:
        self.n = 0

    def host_key(self, kind: str, comment: str) -> HostKey:
        self.n += 1
        return HostKey(kind, f"PRIVATE {self.n}\n", f"ssh-{kind} AAAA{self.n:04d} {comment}")

    def secret(self, length: int, alphabet: str) -> str:
        return (alphabet[7] * length)[:length]


def fixed_artifacts(plex: Plex) -> dict[str, ResolvedArtifact]:
    version = plex.kubernetes.version or "v1.31.4+rke2r1"
    return {
        "rke2": ResolvedArtifact(
            "rke2",
            f"https://example.invalid/{version}/rke2.tgz",
            "ab" * 32,
            "rke2.linux-amd64.tar.gz",
            version,
        ),
        "zot": ResolvedArtifact(
            "zot",
            "https://example.invalid/zot",
            "cd" * 32,
            "zot-linux-amd64",
            plex.registry.zot.version,
        ),
    }


def load(name: str) -> Plex:
    return load_plex(REPO / "plexes" / f"{name}.yaml")


def vm_recipe(plex: Plex, role: Role, base: BaseImage | None = None) -> Recipe:
    """The recipe of `role` on the MicroOS base, whatever the plex file says for the role."""
    identity = compute_identity(plex, None, FixedKeyGen())
    role_recipe = load_role_recipe(REPO / "bake", role, plex.registry.engine)
    base = base or load_base_image(REPO / "images", MICROOS)
    return make_recipe(
        plex,
        role,
        role_recipe,
        base,
        Renderer(REPO / "bake" / "templates"),
        template_context(plex, identity, role),
        fixed_artifacts(plex),
    )


def template_for(plex: Plex, role: Role, base: BaseImage | None = None) -> dict[str, Any]:
    recipe = vm_recipe(plex, role, base)
    return packer_template(
        plex,
        recipe,
        BuildPaths.placeholder(recipe),
        PLACEHOLDER_CHECKSUM,
        VmSpec.for_role(plex, role),
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PLEX_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with PLEX_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path} differs: PLEX_UPDATE_GOLDEN=1 to accept"


def provisioner_text(template: dict[str, Any]) -> str:
    return "\n".join(line for p in template["provisioners"] for line in p.get("inline", []))


@pytest.mark.parametrize(
    ("plex_name", "role"),
    [("omniplex", Role.SERVER), ("verniplex", Role.LB), ("verniplex", Role.AGENT)],
)
def test_golden_template(plex_name: str, role: Role) -> None:
    text = json.dumps(template_for(load(plex_name), role), indent=2) + "\n"
    check_golden(f"{plex_name}-{role.value}.json", text)


def test_template_shape_for_a_kube_role() -> None:
    t = template_for(load("omniplex"), Role.SERVER)
    (builder,) = t["builders"]
    assert builder["type"] == "qemu" and builder["disk_image"] is True
    assert builder["iso_url"].endswith("OpenStack-Cloud.qcow2")
    assert builder["iso_checksum"] == PLACEHOLDER_CHECKSUM
    assert builder["cd_label"] == "cidata" and builder["ssh_username"] == "root"
    assert builder["disk_size"] == "61440M"  # omniplex server disk: 60GiB
    script = provisioner_text(t)
    assert "tar -xzf /var/cache/plex-build/rke2.linux-amd64.tar.gz -C /opt/rke2" in script
    assert "REBOOT_METHOD" not in script  # it is a file in the tarball, not a command
    assert "systemctl enable plex-node systemd-networkd rke2-server sshd" in script
    assert "systemctl disable rebootmgr.service" in script
    assert "cloud-init clean --logs" in script
    assert "truncate -s 0 /etc/machine-id" in script
    uploads = [p for p in t["provisioners"] if p["type"] == "file"]
    assert [u["source"] for u in uploads] == [
        "/build/plex-files.tar",
        "/build/artifacts/rke2.linux-amd64.tar.gz",
    ]


def test_lb_gets_rebootmgr_and_per_node_windows() -> None:
    plex = load("omniplex")
    recipe = vm_recipe(plex, Role.LB)
    script = provisioner_text(
        packer_template(
            plex,
            recipe,
            BuildPaths.placeholder(recipe),
            PLACEHOLDER_CHECKSUM,
            VmSpec.for_role(plex, Role.LB),
        )
    )
    assert "systemctl enable rebootmgr.service" in script
    assert "haproxy -c -f /etc/haproxy/haproxy.cfg" in script
    files = {f.path: f.content.decode() for f in vm_files(plex, recipe)}
    assert files["/etc/transactional-update.conf"].endswith("REBOOT_METHOD=rebootmgr\n")
    assert "window-start=17:00" in files["/etc/plex/nodes/omniplex-lb1/etc/rebootmgr.conf"]
    assert "window-start=17:15" in files["/etc/plex/nodes/omniplex-lb2/etc/rebootmgr.conf"]
    assert (
        files["/etc/plex/nodes/omniplex-lb2/etc/rebootmgr/rebootmgr.conf"]
        == files["/etc/plex/nodes/omniplex-lb2/etc/rebootmgr.conf"]
    )


def test_kube_roles_use_kured() -> None:
    plex = load("verniplex")
    files = {f.path: f.content.decode() for f in vm_files(plex, vm_recipe(plex, Role.AGENT))}
    assert files["/etc/transactional-update.conf"].endswith("REBOOT_METHOD=kured\n")
    assert not any("rebootmgr" in p for p in files)


def test_rpm_method() -> None:
    plex = load("verniplex")
    base = load_base_image(REPO / "images", MICROOS)
    rpm = BaseImage(base.name, base.kind, base.family, {**base.data, "rke2_install": "rpm"})
    t = template_for(plex, Role.SERVER, rpm)
    script = provisioner_text(t)
    # The zypper line is the script of a transaction: parse the line as sh would.
    argv = shlex.split(
        next(ln for p in t["provisioners"] for ln in p.get("inline", []) if "zypper" in ln)
    )
    assert argv[:6] == [
        "transactional-update",
        "--non-interactive",
        "--continue",
        "run",
        "/bin/sh",
        "-ec",
    ]
    inner = argv[6].splitlines()
    assert shlex.split(inner[-1]) == [
        "zypper",
        "--non-interactive",
        "--gpg-auto-import-keys",
        "install",
        "rke2-server-1.31.4~rke2r1",
    ]
    assert "baseurl=https://rpm.rancher.io/rke2/stable/1.31/microos/x86_64" in argv[6]
    # As rancher/rke2 install.sh: /var/lib/rpm-state made in the same transaction before the
    # install (rke2-selinux's %pre), and both package and repository GPG checks on.
    assert shlex.split(inner[-2]) == ["mkdir", "-p", "/var/lib/rpm-state"]
    assert argv[6].count("gpgcheck=1\nrepo_gpgcheck=1\n") == 2
    assert "gpgcheck=0" not in argv[6]
    assert "tar -xzf" not in script
    uploads = [p["source"] for p in t["provisioners"] if p["type"] == "file"]
    assert uploads == ["/build/plex-files.tar"]
    assert rke2_rpm_version("v1.30.2+rke2r1") == "1.30.2~rke2r1"


def test_digest_ignores_paths_but_follows_recipe_and_windows() -> None:
    plex = load("omniplex")
    recipe = vm_recipe(plex, Role.LB)
    d = vm_digest(plex, recipe)
    assert d == vm_digest(plex, vm_recipe(plex, Role.LB))
    assert len(d) == 64 and d != recipe.digest
    other_windows = plex.model_copy(
        update={"reboot_windows": plex.reboot_windows.model_copy(update={"offsets": (0, 20, 40)})}
    )
    assert vm_digest(other_windows, vm_recipe(other_windows, Role.LB)) != d
    # A different plex layer (another VIP) changes the recipe, hence the VM digest.
    other_net = plex.model_copy(
        update={"network": plex.network.model_copy(update={"vip": "10.20.0.9"})}
    )
    assert vm_digest(other_net, vm_recipe(other_net, Role.LB)) != d


def test_checksum_must_be_a_digest() -> None:
    plex = load("omniplex")
    recipe = vm_recipe(plex, Role.LB)
    with pytest.raises(ValueError, match="sha256:<hex>"):
        packer_template(
            plex,
            recipe,
            BuildPaths.placeholder(recipe),
            "file:https://example.invalid/x.sha256",
            VmSpec(4096),
        )


def test_container_base_is_refused_with_its_file() -> None:
    debian = load_base_image(REPO / "images", "debian-bookworm")
    with pytest.raises(ConfigErrors, match=r"images/debian-bookworm.yaml: kind: 'mmdebstrap'"):
        Qcow2Base.from_base(debian)
    base = load_base_image(REPO / "images", MICROOS)
    bad = replace(base, data={**base.data, "rke2_install": "curl"})
    with pytest.raises(ConfigErrors, match="rke2_install: 'curl' is not tar or rpm"):
        Qcow2Base.from_base(bad)


def test_files_tarball_is_reproducible_and_keeps_modes() -> None:
    plex = load("omniplex")
    files = vm_files(plex, vm_recipe(plex, Role.SERVER))
    raw = files_tarball(files)
    assert raw == files_tarball(files)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    cfg = members["etc/rancher/rke2/config.yaml"]
    assert cfg.mode == 0o600 and cfg.uid == 0 and cfg.mtime == 0
    assert members["usr/libexec/plex-node-setup"].mode == 0o755
    assert "etc/plex/nodes/omniplex-server1/etc/rancher/rke2/config.yaml.d/10-node.yaml" in members


def test_size_mib() -> None:
    assert size_mib("60GiB") == 61440
    assert size_mib("512MiB") == 512
    assert size_mib("1GB") == 954  # rounded up
    with pytest.raises(ValueError):
        size_mib("lots")


def test_files_lost_inside_a_transaction_are_refused() -> None:
    """The files tarball is extracted inside a transaction: /usr/local (its own subvolume) and
    /var (outside the snapshot, bar the dirs tukit bind-mounts) would be hidden after reboot."""
    assert lost_in_transaction("/usr/local/sbin/plex-node-setup")
    assert lost_in_transaction("/var/lib/rancher/rke2/server/manifests/x.yaml")
    for kept in (
        "/usr/libexec/plex-node-setup",
        "/etc/plex/nodes/a/etc/hosts",
        "/opt/rke2/x",
        "/var/lib/ca-certificates/x",
        "/root/.profile",
    ):
        assert not lost_in_transaction(kept), kept
    plex = load("verniplex")
    for role in (Role.LB, Role.SERVER, Role.AGENT, Role.REGISTRY):
        files = vm_files(plex, vm_recipe(plex, role))  # checks, raises on a lost path
        assert "/usr/libexec/plex-node-setup" in {f.path for f in files}
    bad = (RenderedFile("/usr/local/sbin/plex-node-setup", b"#!/bin/sh\n", 0o755),)
    with pytest.raises(
        ConfigError,
        match=r"bake/common.yaml: files: /usr/local/sbin/"
        r"plex-node-setup: written inside a transactional",
    ):
        check_transaction_paths(bad, "bake/common.yaml")
