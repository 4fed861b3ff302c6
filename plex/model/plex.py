"""The plex definition: what `plexes/<name>.yaml` holds, as frozen, validated models.

Pure data. Loading (YAML, line map, errors naming file:line and the field path such as
`roles.server.count`) is `plex.plexfile.load`; cross-field rules (addresses inside the CIDR,
overlapping ranges...) are `plex.plexfile.checks`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from plex.model.enums import Addressing, Cni, Engine, Role, Runtime, Virt, VrrpMode
from plex.model.sizes import SIZE_PATTERN

# Re-exported: the plex definition's fixed sets are imported from here across plex.
__all__ = ["Addressing", "Cni", "Engine", "Role", "Runtime", "Virt", "VrrpMode"]

# Incus instance names are hostnames: one DNS label.
LABEL_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
SIZE_RE = re.compile(SIZE_PATTERN)
DURATION_RE = re.compile(r"^(?=.)(\d+h)?(\d+m)?$")  # 1h, 30m, 1h30m: not empty
RKE2_VERSION = r"v\d+\.\d+\.\d+\+rke2r\d+"


def _matching(pattern: str, problem: str, max_len: int | None = None) -> AfterValidator:
    """A string field that must match `pattern` whole: "'<value>' <problem>" otherwise."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value) or (max_len is not None and len(value) > max_len):
            raise ValueError(f"'{value}' {problem}")
        return value

    return AfterValidator(check)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


Size = Annotated[str, Field(pattern=SIZE_RE.pattern, examples=["2GiB", "512MiB"])]


class IncusConfig(_Model):
    """How to reach Incus and where the plex's instances live."""

    remote: str = Field("local", description="'local' (unix socket) or an https:// URL")
    socket: str | None = Field(None, description="unix socket; default $INCUS_SOCKET or Incus's")
    client_cert: str | None = Field(None, description="client certificate for a remote URL")
    client_key: str | None = None
    verify: bool | str = Field(True, description="TLS verification for a remote: bool or CA path")
    project: Annotated[
        str, _matching(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "is not a valid Incus project name")
    ] = Field(..., description="Incus project holding this plex (created if missing)")
    pool: str = "default"
    network: str = "incusbr0"
    network_type: Literal["bridge", "macvlan"] = Field(
        "bridge",
        description="type of the Incus network: a managed bridge, or macvlan on the "
        "members' uplink (a cluster's shared L2; no DHCP reservation, addressing: static)",
    )
    members: tuple[str, ...] = Field((), description="cluster members used for placement")

    @field_validator("remote")
    @classmethod
    def _remote(cls, v: str) -> str:
        if v != "local" and not v.startswith("https://"):
            raise ValueError("must be 'local' or an https:// URL")
        return v

    @field_validator("verify", mode="plain", json_schema_input_type=bool | str)
    @classmethod
    def _verify(cls, v: object) -> bool | str:
        # Plain: pydantic would report a bool | str union once per member, tagged in the path.
        if isinstance(v, bool | str):
            return v
        raise ValueError("must be true, false or the path of a CA certificate")


class NetworkConfig(_Model):
    cidr: str = Field(..., description="node network, e.g. 10.77.0.0/24")
    gateway: str | None = None
    vip: str | None = Field(None, description="virtual IP for the API, held by the lb nodes")
    domain: Annotated[str, _matching(DOMAIN_RE.pattern, "is not a valid DNS domain", 200)] = (
        "plex.internal"
    )
    dns: tuple[str, ...] = Field(
        (),
        description="resolvers written to every node's /etc/resolv.conf (static and dhcp); "
        "empty: the gateway (an Incus bridge answers DNS there)",
    )
    addressing: Addressing = Addressing.STATIC
    vrrp: VrrpMode = VrrpMode.MULTICAST
    virtual_router_id: int = Field(51, ge=1, le=255)
    interface: str = Field("eth0", description="NIC name inside the nodes")


class OsConfig(_Model):
    base: str = Field("debian-bookworm", description="base image name from images/")
    virt: Virt = Virt.CONTAINER


class KubernetesConfig(_Model):
    distribution: Literal["rke2"] = "rke2"
    version: (
        Annotated[str, _matching(RKE2_VERSION, "is not an RKE2 version like v1.31.4+rke2r1")] | None
    ) = Field(None, description="e.g. v1.31.4+rke2r1; exclusive with channel")
    channel: str | None = Field(None, description="stable, latest or v1.31 (resolved at bake)")
    cni: Cni = Cni.CANAL
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    release_url: str = Field(
        "https://github.com/rancher/rke2/releases/download",
        description="where release assets are fetched from: a mirror URL, or a local "
        "directory laid out like the release page (<dir>/<version>/<asset>)",
    )
    airgap: bool = Field(
        False,
        description="bake RKE2's airgap image tarball into kube nodes: they start "
        "with no registry or upstream at all",
    )
    channel_url: str = "https://update.rke2.io/v1-release/channels"


class Upstream(_Model):
    name: str = Field(..., description="registry host as images name it, e.g. docker.io")
    url: Annotated[str, _matching(r"https?://[^\s/]+(/\S*)?", "is not an http(s) URL")] = Field(
        ..., description="upstream URL, e.g. https://registry-1.docker.io"
    )
    tls_verify: bool = True


class ZotConfig(_Model):
    # Keep in step with plex.registry.zot.DEFAULT_VERSION (the newest release whose config keys
    # plex/registry/zot_keys.json holds).
    version: str = Field("v2.1.20", pattern=r"^v\d+\.\d+\.\d+$")
    url: str = Field(
        "https://github.com/project-zot/zot/releases/download/{version}/zot-linux-amd64",
        description="binary URL; {version} is substituted",
    )
    sha256: str | None = Field(
        None,
        description="expected sha256 of the binary (else the release's checksums.sha256.txt "
        "beside the binary)",
    )


class StoreConfig(_Model):
    """A local namespace on the plex registry that accepts pushes (CI build outputs), behind a
    login generated into the identity; its data lives on the cache volume, so it survives
    resets and registry node replacements (see plex.registry.store)."""

    enabled: bool = False
    namespace: Annotated[
        str, _matching(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", "is not a repository name component")
    ] = Field("ci", description="zot: the repository prefix that accepts pushes (ci/...)")
    user: Annotated[str, _matching(r"[a-z][a-z0-9_-]{0,31}", "is not a user name")] = Field(
        "ci", description="the login CI pushes with (its password is in the identity)"
    )
    port: int = Field(
        5100, ge=1, le=65535, description="distribution: the store's own (non-proxy) instance"
    )


class RegistryConfig(_Model):
    engine: Engine = Engine.ZOT
    runtime: Runtime = Runtime.INCUS
    port: int = Field(5000, ge=1, le=65535)
    upstreams: tuple[Upstream, ...] = (
        Upstream(name="docker.io", url="https://registry-1.docker.io"),
    )
    credentials_file: str | None = Field(
        None, description="YAML outside git: {<upstream name>: {username, password}}"
    )
    cache_size: Size = "20GiB"
    zot: ZotConfig = ZotConfig()
    store: StoreConfig = StoreConfig()


class TlsConfig(_Model):
    """Extra certificate authorities the nodes trust (a private registry, a TLS-inspecting
    proxy): see plex.plexfile.trust."""

    ca_files: tuple[str, ...] = Field(
        (),
        description="PEM CA certificates (relative to the plex file) added to the registry "
        "and kube nodes' trust stores and to containerd's (registries.yaml tls.ca_file)",
    )


class RoleConfig(_Model):
    count: int = Field(1, ge=0, le=250)
    capacity: int | None = Field(
        None,
        ge=0,
        le=250,
        description="nodes whose identity, hosts and per-node files every image is baked for "
        "(>= count, default count): growing within it changes no image",
    )
    offset: int = Field(..., ge=1, description="first node's host number in the CIDR (cidrhost)")
    cpu: int = Field(1, ge=1, le=256)
    memory: Size = "1GiB"
    disk: Size = "8GiB"
    os: OsConfig | None = Field(None, description="overrides the plex-wide os")
    profiles: tuple[str, ...] = Field((), description="extra Incus profiles added to the role's")
    config: dict[str, str] = Field({}, description="extra Incus instance config keys")
    placement: tuple[str, ...] = Field(
        (), description="members for this role's nodes (round-robin); one per node pins them"
    )

    @property
    def reserved(self) -> int:
        """How many nodes the role's identity and images are precomputed for."""
        return max(self.count, self.capacity if self.capacity is not None else self.count)


# kubereboot/kured pkg/timewindow/days.go: dayStrings are each day's full name, its first three
# and its first two letters (and numbers 0-6), case-insensitive.
_WEEK = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
KURED_DAYS = {day[:k]: n for n, day in enumerate(_WEEK) for k in (2, 3, len(day))}


def parse_day(day: str) -> int:
    """A kured weekday (0 = Sunday), or ValueError with kured's own message."""
    if re.fullmatch(r"-?\d+", day):
        n = int(day)
        if 0 <= n < 7:
            return n
        raise ValueError(f"Invalid weekday, number out of range: {day}")
    try:
        return KURED_DAYS[day.lower()]
    except KeyError:
        raise ValueError(f"Invalid weekday: {day}") from None


def _each_in(low: int, high: int, unit: str) -> AfterValidator:
    """Every number of a tuple within low..high; the message names the unit (hour 24...)."""

    def check(values: tuple[int, ...]) -> tuple[int, ...]:
        for n in values:
            if not low <= n <= high:
                raise ValueError(f"{unit} {n} is not in {low}..{high}")
        return values

    return AfterValidator(check)


class RebootWindows(_Model):
    """When MicroOS nodes may reboot after transactional updates (see plex.bake.windows)."""

    slots: Annotated[tuple[int, ...], _each_in(0, 23, "hour")] = Field(
        (3,), description="start hours (0-23)"
    )
    offsets: Annotated[tuple[int, ...], _each_in(0, 59, "minute")] = Field(
        (0,), description="minute offsets inside each slot"
    )
    duration: Annotated[
        str, _matching(DURATION_RE.pattern, "is not a duration like 1h or 30m or 1h30m")
    ] = "1h"
    # kured (kube nodes) reboots only on these days; kured's own day names (su..sa or 0-6).
    days: tuple[str, ...] = Field(
        ("su", "mo", "tu", "we", "th", "fr", "sa"),
        description="days kured may reboot kube nodes on",
    )

    @field_validator("days")
    @classmethod
    def _days(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for d in v:
            parse_day(d)
        if not v:
            raise ValueError("at least one day")
        return v


class NightlyConfig(_Model):
    """`plex nightly` on this plex as the staging plex (see docs/nightly.md)."""

    smoke_image: str = Field(
        "docker.io/library/busybox:1.36",
        description="image a kube node pulls through the plex registry in the smoke check; "
        "its registry must be one of registry.upstreams",
    )
    keep: int = Field(3, ge=1, le=100, description="image generations per role kept by prune")


class BootstrapConfig(_Model):
    """Manifests the cluster applies itself (the seeds' fluxstrap; docs/bootstrap.md)."""

    manifests: str | None = Field(
        None,
        description="directory of *.yaml/*.yml/*.json manifests (relative to the plex "
        "file) placed in RKE2's auto-deploy directory on every server when it is created",
    )


class KuredConfig(_Model):
    """kured on the kube nodes: reboots after updates inside reboot_windows, one node at a time."""

    enabled: bool | None = Field(
        None, description="default: on when a kube role runs a transactional OS (MicroOS)"
    )
    image: str = "ghcr.io/kubereboot/kured:1.20.0"
    time_zone: str = Field("UTC", description="zone of reboot_windows (kured --time-zone)")


class Roles(_Model):
    registry: RoleConfig | None = None
    lb: RoleConfig | None = None
    server: RoleConfig
    agent: RoleConfig | None = None

    def items(self) -> list[tuple[Role, RoleConfig]]:
        """The configured roles, in wave order."""
        out: list[tuple[Role, RoleConfig]] = []
        for role in Role:
            rc = getattr(self, role.value)
            if rc is not None:
                out.append((role, rc))
        return out

    def get(self, role: Role) -> RoleConfig | None:
        rc: RoleConfig | None = getattr(self, role.value)
        return rc


class Plex(_Model):
    """A whole plex as declared in its YAML file."""

    name: Annotated[
        str,
        _matching(
            LABEL_RE.pattern,
            "must be lowercase letters, digits and '-', start with a letter, at most 40 "
            "characters (node names append '-<role><n>')",
            40,
        ),
    ] = Field(..., description="plex name; prefixes every node name")
    description: str = ""
    incus: IncusConfig
    network: NetworkConfig
    os: OsConfig = OsConfig()
    kubernetes: KubernetesConfig = KubernetesConfig(version="v1.31.4+rke2r1")
    registry: RegistryConfig = RegistryConfig()
    tls: TlsConfig = TlsConfig()
    roles: Roles
    reboot_windows: RebootWindows = RebootWindows()
    nightly: NightlyConfig = NightlyConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    kured: KuredConfig = KuredConfig()
    # Where the file came from: set by load_plex, excluded from schema and digests.
    source: str = Field("", exclude=True, json_schema_extra={"hidden": True})

    def os_for(self, role: Role) -> OsConfig:
        rc = self.roles.get(role)
        return rc.os if rc is not None and rc.os is not None else self.os
