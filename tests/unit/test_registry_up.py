"""plex.services.registry `up` without a daemon: the registry-only plan, pushed upstream logins
over the in-memory Incus, and `up`/`down` for runtime docker over a recording fake of the Docker
Protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.backends.docker import LABEL_PLEX, LABEL_SPEC, ContainerInfo, ContainerSpec
from plex.backends.incus.protocol import ExecResult
from plex.deploy.spec import RoleProfile, instance_spec
from plex.model import topology
from plex.model.plex import Engine, Plex, Role, Runtime, Upstream
from plex.plexfile.load import load_plex
from plex.registry.credentials import parse_credentials
from plex.services import registry as ops
from plex.services import registry_secrets
from plex.services.registry_secrets import push_credentials
from tests.fixtures.fake_incus import FakeIncus

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "registry"
RESTART = ("sh", "-c", registry_secrets.RESTART, "sh")


def demo() -> Plex:
    return load_plex(REPO / "plexes" / "demo.yaml")


def with_registry(plex: Plex, **changes: Any) -> Plex:
    return plex.model_copy(update={"registry": plex.registry.model_copy(update=changes)})


def test_registry_only_keeps_the_registry_node_and_its_spec() -> None:
    plex = demo()
    alone = ops.registry_only(plex)
    node = topology.registry_node(plex)
    assert node is not None
    assert topology.nodes(alone) == [node]
    from plex.model.image import ImageRef

    image = ImageRef(Role.REGISTRY, "d" * 64, "f" * 64, "demo/registry")
    profile = RoleProfile(config={}, devices={})
    assert instance_spec(alone, node, image, profile) == instance_spec(plex, node, image, profile)


def registry_node(name: str) -> FakeIncus:
    """A running registry node whose system groups have gid 121."""
    incus = FakeIncus(
        on_exec=lambda _, argv: (
            ExecResult(0, f"{argv[2]}:x:121:\n", "") if argv[:2] == ["getent", "group"] else None
        )
    )
    incus.add_instance(name)
    return incus


def test_push_credentials_writes_only_secret_files_and_restarts_their_units() -> None:
    creds_path = GOLDEN / "cases" / "credentials.yaml"
    creds = parse_credentials(creds_path.read_text(), str(creds_path))
    plex = load_plex(GOLDEN / "cases" / "four.yaml")
    plex = with_registry(plex, engine=Engine.DISTRIBUTION)
    incus = registry_node("four-registry1")
    paths = push_credentials(plex, incus, "four-registry1", creds)
    assert paths == ["/etc/docker/registry/docker.io.yml", "/etc/docker/registry/quay.io.yml"]
    pushes = [c for c in incus.calls if c[0] == "push"]
    assert [c[1:] for c in pushes] == [
        ("four-registry1", "/etc/docker/registry/docker.io.yml", 0o640, 0, 121),
        ("four-registry1", "/etc/docker/registry/quay.io.yml", 0o640, 0, 121),
    ]
    assert [(f.mode, f.gid) for f in incus.files.values()] == [(0o640, 121), (0o640, 121)]
    kind, node, _, argv = incus.calls[-1]
    assert (kind, node) == ("exec", "four-registry1")
    assert argv == (*RESTART, "plex-registry@docker.io.service", "plex-registry@quay.io.service")
    # Nothing recorded carries a password.
    assert "FAKE" not in repr(incus.calls)


def test_push_credentials_without_a_credentials_file_does_nothing() -> None:
    incus = registry_node("demo-registry1")
    assert push_credentials(demo(), incus, "demo-registry1") == []
    assert incus.calls == []


# --------------------------------------------------------------------------------------------
# runtime docker over a recording fake of the Docker Protocol


@dataclass
class FakeDocker:
    volumes: dict[str, Mapping[str, str]] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    running: dict[str, ContainerSpec] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def volume_exists(self, name: str) -> bool:
        return name in self.volumes

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        if name in self.volumes:
            return False
        self.calls.append(("volume", name))
        self.volumes[name] = labels
        return True

    def delete_volume(self, name: str) -> None:
        self.calls.append(("delete volume", name))
        self.volumes.pop(name, None)

    def volume_size(self, name: str) -> int | None:
        return 42

    def has_image(self, image: str) -> bool:
        return image in self.images

    def pull_image(self, image: str) -> None:
        self.calls.append(("pull", image))
        self.images.add(image)

    def containers(self, plex: str) -> list[ContainerInfo]:
        return [
            ContainerInfo(s.name, "running", s.image, {**s.labels, LABEL_SPEC: s.digest()})
            for s in self.running.values()
            if s.labels.get(LABEL_PLEX) == plex
        ]

    def run(self, spec: ContainerSpec) -> None:
        assert spec.image in self.images
        self.calls.append(("run", spec.name))
        self.running[spec.name] = spec

    def remove(self, name: str) -> None:
        self.calls.append(("remove", name))
        self.running.pop(name, None)

    def exec(self, name: str, argv: Sequence[str]) -> ExecResult:
        return ExecResult(0, "", "")

    def logs(self, name: str) -> str:
        return ""


def docker_plex(**changes: Any) -> Plex:
    ups = (
        Upstream(name="docker.io", url="https://registry-1.docker.io"),
        Upstream(name="lab.internal:5000", url="http://10.77.0.2:5000"),
    )
    return with_registry(demo(), runtime=Runtime.DOCKER, upstreams=ups, **changes)


def test_docker_specs_for_distribution_one_container_per_upstream() -> None:
    specs = ops.docker_specs(docker_plex())
    assert [s.name for s in specs] == ["demo-registry-docker.io", "demo-registry-lab.internal-5000"]
    for s, port in zip(specs, (5000, 5001), strict=True):
        assert s.image == "registry:2"
        assert s.entrypoint == ("/bin/registry",)
        assert s.volumes == {"demo-registry-cache": "/var/lib/docker-registry"}
        [cfg] = s.files
        assert s.command == ("serve", cfg.path)
        assert f"addr: :{port}" in cfg.content.decode()
        assert not cfg.secret and cfg.mode == 0o644


def test_docker_specs_keep_logins_secret() -> None:
    creds_path = GOLDEN / "cases" / "credentials.yaml"
    creds = parse_credentials(creds_path.read_text(), str(creds_path))
    four = with_registry(
        load_plex(GOLDEN / "cases" / "four.yaml"),
        engine=Engine.DISTRIBUTION,
        runtime=Runtime.DOCKER,
    )
    specs = ops.docker_specs(four, creds)
    cfg = specs[0].files[0]
    assert cfg.secret and cfg.mode == 0o600
    assert b"FAKE-golden-docker-0001" in cfg.content
    assert "FAKE" not in repr(specs) and "<secret>" in repr(cfg)
    # The digest label changes with the password but does not carry it.
    assert specs[0].digest() != ops.docker_specs(four)[0].digest()
    assert not ops.docker_specs(four, creds)[1].files[0].secret  # ghcr.io: no login


def test_docker_specs_for_zot_one_container() -> None:
    [s] = ops.docker_specs(docker_plex(engine=Engine.ZOT))
    assert s.name == "demo-registry"
    assert s.image == "ghcr.io/project-zot/zot-linux-amd64:v2.1.20"
    assert (s.entrypoint, s.command) == (("/usr/bin/zot",), ("serve", "/etc/zot/config.json"))
    assert s.volumes == {"demo-registry-cache": "/var/lib/registry"}
    assert [f.path for f in s.files] == ["/etc/zot/config.json"]


def test_up_docker_creates_then_keeps_then_replaces_what_changed() -> None:
    docker = FakeDocker()
    plex = docker_plex()
    first = ops.up_docker(plex, docker)
    assert first.volume_created and first.runtime == "docker"
    assert docker.calls == [
        ("volume", "demo-registry-cache"),
        ("pull", "registry:2"),
        ("run", "demo-registry-docker.io"),
        ("run", "demo-registry-lab.internal-5000"),
    ]
    assert first.endpoints == ("http://10.77.0.5:5000", "http://10.77.0.5:5001")
    docker.calls.clear()
    again = ops.up_docker(plex, docker)
    assert docker.calls == [] and not again.volume_created
    assert again.actions == (
        "demo-registry-docker.io: keep",
        "demo-registry-lab.internal-5000: keep",
    )
    # One upstream fewer, the other moved to another port: replace one, remove the other.
    moved = with_registry(plex, port=6000, upstreams=plex.registry.upstreams[:1])
    ops.up_docker(moved, docker)
    assert docker.calls == [
        ("remove", "demo-registry-docker.io"),
        ("run", "demo-registry-docker.io"),
        ("remove", "demo-registry-lab.internal-5000"),
    ]


def test_down_docker_keeps_the_volume_unless_everything() -> None:
    docker = FakeDocker()
    plex = docker_plex()
    ops.up_docker(plex, docker)
    assert ops.down_docker(plex, docker) == [
        "demo-registry-docker.io",
        "demo-registry-lab.internal-5000",
    ]
    assert "demo-registry-cache" in docker.volumes
    ops.up_docker(plex, docker)
    assert ops.down_docker(plex, docker, everything=True)[-1] == "volume demo-registry-cache"
    assert docker.volumes == {}


def test_up_docker_uses_an_image_override() -> None:
    docker = FakeDocker(images={"plex-test/registry:2"})
    ops.up_docker(docker_plex(), docker, images={Engine.DISTRIBUTION: "plex-test/registry:2"})
    assert ("pull", "registry:2") not in docker.calls
    assert {s.image for s in docker.running.values()} == {"plex-test/registry:2"}
