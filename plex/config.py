"""The plex definition: `plexes/<name>.yaml` parsed into frozen, validated models.

Pure: reads a file, returns a `Plex` or raises `ConfigErrors` whose lines name the file, the
line, the field path (as written in YAML, e.g. `roles.server.count`) and what is wrong.
Cross-field rules (addresses inside the CIDR, overlapping ranges...) live in `plex.checks`.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plex.errors import ConfigError, ConfigErrors, UsageError

# Incus instance names are hostnames: one DNS label.
LABEL_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
SIZE_RE = re.compile(r"^\d+(\.\d+)?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
DURATION_RE = re.compile(r"^(\d+h)?(\d+m)?$")


class Role(StrEnum):
    """Node roles, in the order their waves deploy."""

    REGISTRY = "registry"
    LB = "lb"
    SERVER = "server"
    AGENT = "agent"

    @property
    def is_kube(self) -> bool:
        return self in (Role.SERVER, Role.AGENT)


class Virt(StrEnum):
    CONTAINER = "container"
    VM = "vm"

    @property
    def incus_type(self) -> str:
        return "virtual-machine" if self is Virt.VM else "container"


class Addressing(StrEnum):
    STATIC = "static"  # plex writes the address into the node (works on any network)
    DHCP = "dhcp"  # an Incus managed-bridge DHCP reservation of the same precomputed address


class VrrpMode(StrEnum):
    MULTICAST = "multicast"
    UNICAST = "unicast"


class Engine(StrEnum):
    ZOT = "zot"
    DISTRIBUTION = "distribution"


class Runtime(StrEnum):
    INCUS = "incus"
    DOCKER = "docker"


class Cni(StrEnum):
    CANAL = "canal"
    CILIUM = "cilium"
    CALICO = "calico"
    FLANNEL = "flannel"
    NONE = "none"


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
    project: str = Field(..., description="Incus project holding this plex (created if missing)")
    pool: str = "default"
    network: str = "incusbr0"
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

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", v):
            raise ValueError(f"'{v}' is not a valid Incus project name")
        return v


class NetworkConfig(_Model):
    cidr: str = Field(..., description="node network, e.g. 10.77.0.0/24")
    gateway: str | None = None
    vip: str | None = Field(None, description="virtual IP for the API, held by the lb nodes")
    domain: str = "plex.internal"
    dns: tuple[str, ...] = Field(
        (), description="resolvers written to every node's /etc/resolv.conf (static and dhcp); "
        "empty: the gateway (an Incus bridge answers DNS there)",
    )
    addressing: Addressing = Addressing.STATIC
    vrrp: VrrpMode = VrrpMode.MULTICAST
    virtual_router_id: int = Field(51, ge=1, le=255)
    interface: str = Field("eth0", description="NIC name inside the nodes")

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if len(v) > 200 or not DOMAIN_RE.fullmatch(v):
            raise ValueError(f"'{v}' is not a valid DNS domain")
        return v


class OsConfig(_Model):
    base: str = Field("debian-bookworm", description="base image name from images/")
    virt: Virt = Virt.CONTAINER


class KubernetesConfig(_Model):
    distribution: Literal["rke2"] = "rke2"
    version: str | None = Field(None, description="e.g. v1.31.4+rke2r1; exclusive with channel")
    channel: str | None = Field(None, description="stable, latest or v1.31 (resolved at bake)")
    cni: Cni = Cni.CANAL
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    release_url: str = Field(
        "https://github.com/rancher/rke2/releases/download",
        description="where release assets are fetched from (a mirror works)",
    )
    channel_url: str = "https://update.rke2.io/v1-release/channels"

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"v\d+\.\d+\.\d+\+rke2r\d+", v):
            raise ValueError(f"'{v}' is not an RKE2 version like v1.31.4+rke2r1")
        return v


class Upstream(_Model):
    name: str = Field(..., description="registry host as images name it, e.g. docker.io")
    url: str = Field(..., description="upstream URL, e.g. https://registry-1.docker.io")
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError(f"'{v}' is not an http(s) URL")
        return v


class ZotConfig(_Model):
    version: str = "v2.1.2"
    url: str = Field(
        "https://github.com/project-zot/zot/releases/download/{version}/zot-linux-amd64",
        description="binary URL; {version} is substituted",
    )
    sha256: str | None = Field(None, description="expected sha256 of the binary (else the .sha256)")


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


class TlsConfig(_Model):
    """Extra certificate authorities the nodes trust (a private registry, a TLS-inspecting
    proxy): see plex.trust."""

    ca_files: tuple[str, ...] = Field(
        (), description="PEM CA certificates (relative to the plex file) added to the registry "
        "and kube nodes' trust stores and to containerd's (registries.yaml tls.ca_file)",
    )


class RoleConfig(_Model):
    count: int = Field(1, ge=0, le=250)
    capacity: int | None = Field(
        None, ge=0, le=250,
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


class RebootWindows(_Model):
    """When MicroOS nodes may reboot after transactional updates (see plex.bake.windows)."""

    slots: tuple[int, ...] = Field((3,), description="start hours (0-23)")
    offsets: tuple[int, ...] = Field((0,), description="minute offsets inside each slot")
    duration: str = "1h"

    @field_validator("slots")
    @classmethod
    def _slots(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for h in v:
            if not 0 <= h <= 23:
                raise ValueError(f"hour {h} is not in 0..23")
        return v

    @field_validator("offsets")
    @classmethod
    def _offsets(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for m in v:
            if not 0 <= m <= 59:
                raise ValueError(f"minute {m} is not in 0..59")
        return v

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not v or not DURATION_RE.fullmatch(v):
            raise ValueError(f"'{v}' is not a duration like 1h or 30m or 1h30m")
        return v


class NightlyConfig(_Model):
    """`plex nightly` on this plex as the staging plex (see docs/nightly.md)."""

    smoke_image: str = Field(
        "docker.io/library/busybox:1.36",
        description="image a kube node pulls through the plex registry in the smoke check; "
        "its registry must be one of registry.upstreams",
    )
    keep: int = Field(3, ge=1, le=100, description="image generations per role kept by prune")


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

    name: str = Field(..., description="plex name; prefixes every node name")
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
    # Where the file came from: set by load_plex, excluded from schema and digests.
    source: str = Field("", exclude=True, json_schema_extra={"hidden": True})

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not LABEL_RE.fullmatch(v) or len(v) > 40:
            raise ValueError(
                f"'{v}' must be lowercase letters, digits and '-', start with a letter, "
                "at most 40 characters (node names append '-<role><n>')"
            )
        return v

    def os_for(self, role: Role) -> OsConfig:
        rc = self.roles.get(role)
        return rc.os if rc is not None and rc.os is not None else self.os


# --------------------------------------------------------------------------------------------
# Loading


def _line_map(text: str) -> tuple[dict[tuple[str | int, ...], int], list[tuple[str, str, int]]]:
    """Map every YAML path (keys and list indexes) to its 1-based line, for error messages.

    Also returns what a plain `safe_load` hides: keys given twice (the last one would silently
    win) and aliases that contain themselves (infinite data), as (path, problem, line).
    """
    lines: dict[tuple[str | int, ...], int] = {}
    problems: list[tuple[str, str, int]] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines, problems
    # An alias reuses a node: walk each node once, so shared or recursive aliases stay cheap.
    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[str | int, ...], parents: frozenset[int]) -> None:
        if id(node) in parents:
            problems.append((_dotted(path), "a YAML alias that contains itself",
                             node.start_mark.line + 1))
            return
        if id(node) in seen:
            return
        seen.add(id(node))
        inside = parents | {id(node)}
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                p = (*path, key)
                line = k.start_mark.line + 1
                ident = (k.tag, key)
                if ident in first and key != "<<":
                    problems.append((_dotted(p), f"key given twice (first on line {first[ident]})",
                                     line))
                first.setdefault(ident, line)
                lines.setdefault(p, line)
                walk(v, p, inside)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = (*path, i)
                lines.setdefault(p, v.start_mark.line + 1)
                walk(v, p, inside)

    if root is not None:
        walk(root, (), frozenset())
    return lines, problems


def _nearest_line(
    lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]
) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_PLAIN_KEY = re.compile(r"[^\s.\[\]\"']+")


def _dotted(loc: tuple[str | int, ...]) -> str:
    """`roles.server.config["limits.cpu"]`: keys a user may spell oddly are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            out += f"[{json.dumps(part)}]"
        else:
            out += f".{part}" if out else part
    return out


def _one_line(text: str) -> str:
    """Error lines quote user input: escape what would break the line (newline, NEL, U+2028)."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _error(file: str, path: str, problem: str, line: int | None) -> ConfigError:
    return ConfigError(file, _one_line(path), _one_line(problem), line)


def _describe(err: dict[str, Any]) -> str:
    """Turn one pydantic error into a short sentence a user understands."""
    kind = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"'{err.get('input')}' is not one of {expected}"
    if kind == "string_pattern_mismatch":
        return f"'{err.get('input')}' is not a size like 2GiB"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping, not {_yaml_type(err.get('input'))}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        got = _yaml_type(err.get("input"))
        return f"{msg.lower()} (got {got} {err.get('input')!r})"
    return msg[0].lower() + msg[1:] if msg else kind


def _yaml_type(value: object) -> str:
    """A value's type as a YAML user names it."""
    names = {type(None): "null", bool: "boolean", int: "integer", float: "number",
             str: "string", list: "list", dict: "mapping"}
    return names.get(type(value), type(value).__name__)


def _loc(err: dict[str, Any]) -> tuple[str | int, ...]:
    # pydantic marks a bad mapping key with a trailing '[key]': the key itself is the path.
    # (The model has no unions that pydantic would tag in loc: see _verify.)
    return tuple(p for p in err["loc"] if p != "[key]")


def parse_plex(text: str, file: str = "<plex>") -> Plex:
    """Parse and validate plex YAML text. Raises ConfigErrors with every problem found."""
    try:
        return _parse(text, file)
    except RecursionError:
        # PyYAML composes recursively: absurdly deep nesting must be an error, not a crash.
        raise ConfigErrors([ConfigError(file, "", "the YAML is nested too deeply", 1)]) from None


def _parse(text: str, file: str) -> Plex:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigErrors([_error(file, "", f"invalid YAML: {problem}", line)]) from None
    if data is None:
        raise ConfigErrors(
            [ConfigError(file, "", "the file is empty; a plex is a YAML mapping", 1)]
        )
    if not isinstance(data, dict):
        raise ConfigErrors(
            [_error(file, "", f"must be a YAML mapping, not {_yaml_type(data)}", 1)]
        )
    if any(not isinstance(k, str) for k in data):
        raise ConfigErrors([_error(file, "", "top-level keys must be strings", 1)])
    lines, structural = _line_map(text)
    if structural:
        raise ConfigErrors([_error(file, path, problem, line)
                            for path, problem, line in structural])
    try:
        plex = Plex.model_validate({**data, "source": file})
    except ValidationError as e:
        errors = []
        for err in e.errors():
            loc = _loc(dict(err))
            errors.append(
                _error(file, _dotted(loc), _describe(dict(err)), _nearest_line(lines, loc))
            )
        raise ConfigErrors(errors) from None
    from plex.checks import check_plex  # cross-field rules; imported late to keep modules small

    problems = [p for p in check_plex(plex) if p.severity == "error"]
    if problems:
        raise ConfigErrors(
            [
                _error(file, p.path, p.message, _nearest_line(lines, p.loc))
                for p in problems
            ]
        )
    return plex


def load_plex(path: Path) -> Plex:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plex file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(str(path), "", f"cannot read: {e}")]) from None
    plex = parse_plex(text, str(path))
    if plex.tls.ca_files:
        from plex.trust import check_ca_files  # reads the files: kept out of the pure parse

        problems = check_ca_files(plex)
        if problems:
            lines, _ = _line_map(text)
            raise ConfigErrors([_error(str(path), _dotted(loc), msg, _nearest_line(lines, loc))
                                for loc, msg in problems])
    return plex


def find_plex(name_or_path: str, plexes_dir: Path | None = None) -> Path:
    """`demo` -> plexes/demo.yaml (searched from $PLEX_HOME or the cwd); a path stays a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    import os

    base = plexes_dir or Path(os.environ.get("PLEX_HOME", ".")) / "plexes"
    for suffix in (".yaml", ".yml"):
        cand = base / f"{name_or_path}{suffix}"
        if cand.exists():
            return cand
    known = sorted(x.stem for x in base.glob("*.yaml")) if base.is_dir() else []
    raise UsageError(
        f"no plex named '{name_or_path}' in {base}",
        hint=f"known plexes: {', '.join(known)}" if known else "create plexes/<name>.yaml",
    )


def json_schema() -> dict[str, Any]:
    schema = Plex.model_json_schema(mode="validation")
    schema["properties"].pop("source", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "plex definition"
    return schema
