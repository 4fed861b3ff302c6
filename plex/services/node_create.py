"""Create one node: the instance from its exact image and spec, its private files pushed from
the identity before first boot (host keys, join token, VRRP password; 0600, checked), its
bootstrap manifests and, for a master joining a running cluster, the drop-in that points it at
the VIP."""

from __future__ import annotations

import time
from dataclasses import dataclass

from plex.backends.incus.protocol import Incus
from plex.deploy.cloudinit import cloud_init_config
from plex.deploy.spec import InstanceSpec, registry_volume
from plex.model import owner, topology
from plex.model.identity import Identity, PrivateFile
from plex.model.plex import Plex, Role
from plex.plexfile.bootstrap import MANIFESTS_DIR
from plex.services.apply_result import Report
from plex.services.push import push_checked

# RKE2 merges config.yaml.d/*.yaml in lexical order after config.yaml: a master re-created in a
# running cluster gets this drop-in at create, so it joins through the VIP like any server.
JOIN_DROPIN = "/etc/rancher/rke2/config.yaml.d/20-plex-join.yaml"


@dataclass
class NodeFactory:
    plex: Plex
    incus: Incus
    identity: Identity
    report: Report
    deploy_id: str = ""

    def create(self, spec: InstanceSpec, generation: int, join: bool = False) -> None:
        name = spec.name  # the instance; its node is spec.config[owner.NODE]
        node = spec.config.get(owner.NODE, name)
        if spec.role is Role.REGISTRY:
            # The cache volume outlives the instance: reset and destroy keep it.
            self.incus.ensure_volume(
                self.plex.incus.pool,
                registry_volume(self.plex),
                {"size": self.plex.registry.cache_size},
                target=spec.target,
            )
        config = {
            **spec.config,
            owner.GENERATION: str(generation),
            owner.DEPLOY: self.deploy_id,
            owner.CREATED: str(int(time.time())),
        }
        vm = spec.type == "virtual-machine"
        if vm:
            # No incus-agent: the manifests and the join drop-in go with cloud-init too.
            extra = [PrivateFile(m.path, m.data, 0o600) for m in spec.manifests]
            if join:
                extra.append(PrivateFile(JOIN_DROPIN, self.join_dropin().encode(), 0o600))
            config.update(
                cloud_init_config(
                    self.plex, self.identity, topology.resolve(self.plex, node), extra
                )
            )
        self.report(name, "create")
        self.incus.create_instance(
            name,
            image=spec.image,
            config=config,
            devices=spec.devices,
            profiles=list(spec.profiles),
            virt=spec.type,
            target=spec.target,
        )
        if not vm:
            # A VM has no incus-agent: all of this went in with cloud-init (above).
            self.push_private_files(name, spec.role, node)
            if node != name:
                # An evacuated copy boots as its node, not as its instance name.
                self.incus.pin_hostname(name, node)
            self.push_manifests(spec)
            if join:
                self.push_join(name)

    def push_private_files(self, name: str, role: Role, node: str = "") -> None:
        """The node's own secrets (Identity.private_files: host keys, node password, join
        token, VRRP password), pushed into the stopped instance before first boot; every
        private file's mode is read back, since a leaked mode is a leaked secret. Images and
        artifacts hold none of them."""
        made: set[str] = set()
        for f in self.identity.private_files(node or name, role):
            parent = f.path.rsplit("/", 1)[0]
            if parent not in made:
                self.incus.make_dirs(name, parent)
                made.add(parent)
            if f.mode & 0o077:
                self.incus.push_file(name, f.path, f.data, mode=f.mode)  # public (.pub)
            else:
                push_checked(self.incus, name, f.path, f.data, f.mode)

    def push_manifests(self, spec: InstanceSpec) -> None:
        """Bootstrap manifests into RKE2's auto-deploy directory, before the server's first
        start: the cluster applies them itself (plex.bootstrap)."""
        if not spec.manifests:
            return
        self.report(spec.name, f"{len(spec.manifests)} bootstrap manifest(s)")
        self.incus.make_dirs(spec.name, MANIFESTS_DIR)
        for m in spec.manifests:
            # 0600 like RKE2's own config: manifests may carry secrets (a Git deploy key).
            self.incus.push_file(spec.name, m.path, m.data, mode=0o600)

    def join_dropin(self) -> str:
        api = topology.api_address(self.plex)
        return (
            "# Written by plex at create: this master joins the running cluster through "
            f"the VIP.\nserver: https://{api}:9345\n"
        )

    def push_join(self, name: str) -> None:
        self.report(name, "join through the VIP")
        self.incus.push_file(name, JOIN_DROPIN, self.join_dropin().encode(), mode=0o600)
