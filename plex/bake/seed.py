"""The cloud-init NoCloud seed of a MicroOS build VM: user-data + meta-data. Pure.

Packer puts both files on a CD labelled `cidata`; cloud-init reads it on the build VM's first
boot and authorises the bake's throwaway SSH key for root. Nothing else is configured here: the
image's own configuration comes from the role recipe, and `cloud-init clean` at the end of the
build makes cloud-init run again on each node's first boot (with the node's Incus data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

SEED_LABEL = "cidata"  # the volume label NoCloud looks for
_PUBLIC_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( [^\n]*)?")


@dataclass(frozen=True)
class Seed:
    user_data: str
    meta_data: str

    def files(self) -> dict[str, str]:
        """File name -> content, as NoCloud expects them on the seed volume."""
        return {"user-data": self.user_data, "meta-data": self.meta_data}


def build_seed(plex: str, role: str, public_key: str) -> Seed:
    """The seed for the build VM of `plex`/`role`, trusting only `public_key`."""
    key = public_key.strip()
    if not _PUBLIC_KEY.fullmatch(key):
        raise ValueError(f"not a single OpenSSH public key: {key[:40]!r}")
    name = f"plex-build-{plex}-{role}"
    user_data = {
        # Root, because every provisioner runs transactional-update; the key is thrown away
        # with the build and removed from the image by the cleanup step.
        "disable_root": False,
        "ssh_pwauth": False,
        "users": [{"name": "root", "lock_passwd": True, "ssh_authorized_keys": [key]}],
    }
    meta_data = {"instance-id": name, "local-hostname": name}
    header = f"#cloud-config\n# Written by plex for the build VM of {plex}/{role} only.\n"
    return Seed(
        user_data=header + yaml.safe_dump(user_data, sort_keys=False, width=1000),
        meta_data=yaml.safe_dump(meta_data, sort_keys=False),
    )
