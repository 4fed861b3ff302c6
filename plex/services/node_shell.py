"""One way to run a command on any node of a plex: `incus exec` for containers, SSH for VM
nodes (no incus-agent in their image), so the role's probes run the same on both."""

from __future__ import annotations

from typing import Any

from plex.backends.incus.protocol import ExecResult, Incus
from plex.backends.ssh import SshExecutor, SshTarget
from plex.model import topology
from plex.model.identity import Identity
from plex.model.plex import Plex, Virt

# Shell prefixes for commands run right after a node's start: systemctl fails with "Failed to
# connect to bus" until the container's systemd is up (given up after 60 s: the probes say why);
# BOOTED also waits for the boot to finish (or 120 s).
SYSTEMD_BUS = (
    "i=0; until systemctl show-environment >/dev/null 2>&1; do "
    'i=$((i+1)); [ "$i" -gt 240 ] && break; sleep 0.25; done; '
)
SYSTEMD_BOOTED = SYSTEMD_BUS + "timeout 120 systemctl is-system-running --wait >/dev/null 2>&1; "


class NodeShell:
    def __init__(self, plex: Plex, incus: Incus, identity: Identity) -> None:
        self.incus = incus
        vms = [n for n in topology.nodes(plex, reserved=True) if n.virt is Virt.VM]
        self.ssh: SshExecutor | None = None
        if vms and identity.deploy_key is not None:
            identity.require_secrets()  # the deploy key's private half logs in
            targets = {
                n.name: SshTarget(n.address, identity.host_keys(n.name)["ed25519"].public_key)
                for n in vms
            }
            self.ssh = SshExecutor(targets, identity.deploy_key.private)

    def exec(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ExecResult:
        if self.ssh is not None and name in self.ssh.targets:
            return self.ssh.exec(name, argv, env)
        return self.incus.exec(name, argv, env)

    def instance_names(self) -> Any:
        return self.incus.instance_names()

    def close(self) -> None:
        if self.ssh is not None:
            self.ssh.close()
