"""What the user sees before anything changes: one image source and one plan path, nothing
applied or moved without a yes, one-line errors, destroy of every runtime, validate's rules."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from plex.__main__ import main
from plex.cli.commands.deploy import run_deploy
from plex.cli.commands.plan import plan_for
from plex.errors import UsageError
from plex.model.image import image_alias
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex, parse_plex
from plex.services.deploy import make_deploy_plan
from plex.services.destroy import destroy
from plex.services.validate import validate
from plex.store.catalog import Catalog, Entry, save_catalog
from tests.fixtures.fake_incus import FakeIncus

ROOT = Path(__file__).resolve().parents[2]


def demo() -> Plex:
    return load_plex(ROOT / "plexes" / "demo.yaml")


@pytest.fixture
def two_generations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Observed:
    """Every demo role baked twice; the aliases point at the older one (after a rollback)."""
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path / "state"))
    plex = demo()
    entries = []
    for role, _rc in plex.roles.items():
        for gen in (1, 2):
            entries.append(
                Entry(
                    role.value,
                    f"{role.value}{gen}".ljust(64, "0"),
                    "p" * 64,
                    f"fp-{role.value}-{gen}",
                    baked_at=float(gen),
                )
            )
    save_catalog(Catalog(plex.name, tuple(entries)))
    aliases = {image_alias(plex.name, r): f"fp-{r.value}-1" for r, _ in plex.roles.items()}
    return Observed(plex.name, plex.incus.project, aliases=aliases)


def test_plan_and_deploy_plan_the_same_images_after_a_rollback(
    two_generations: Observed, tmp_path: Path
) -> None:
    plex = demo()
    snapshot = tmp_path / "observed.json"
    snapshot.write_text(json.dumps(two_generations.to_json()))
    shown = plan_for(plex, [], False, snapshot, None)  # plex plan --observed
    deployed, _ = make_deploy_plan(plex, FakeIncus.holding(two_generations))
    assert shown.to_json() == deployed.to_json()
    # ... and both create the nodes from what the aliases point at, not the newest bake.
    fingerprints = {a.spec.image for a in shown.actions if a.spec is not None}
    assert fingerprints and all(fp.endswith("-1") for fp in fingerprints), fingerprints


def _no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_declined_rollback_moves_no_alias(
    two_generations: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point the aliases at the newer generation: a rollback has somewhere to go.
    plex = demo()
    newer = Observed(
        plex.name,
        plex.incus.project,
        aliases={a: fp.replace("-1", "-2") for a, fp in two_generations.aliases.items()},
    )
    incus = FakeIncus.holding(newer)
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    with pytest.raises(UsageError, match="not applied"):
        run_deploy(
            plex,
            incus,
            [],
            False,
            1,
            False,
            False,
            verb="rollback",
            rollback=True,
            role=Role.SERVER,
        )
    assert incus.calls == []


@pytest.mark.parametrize("as_json", [False, True])
def test_without_yes_and_without_a_terminal_nothing_is_applied(
    two_generations: Observed,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    _no_tty(monkeypatch)
    incus = FakeIncus.holding(two_generations)
    with pytest.raises(UsageError, match="no terminal to confirm on"):
        run_deploy(demo(), incus, [], False, 1, False, as_json)
    assert incus.calls == []
    if as_json:  # the plan was shown, on stderr: stdout stays for the JSON
        out = capsys.readouterr()
        assert out.out == "" and "plan for demo" in out.err


def test_json_output_still_asks_on_a_terminal(
    two_generations: Observed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    incus = FakeIncus.holding(two_generations)
    with pytest.raises(UsageError, match="not applied"):
        run_deploy(demo(), incus, [], False, 1, False, True)
    assert "[y/N]" in capsys.readouterr().err
    assert incus.calls == []


def test_an_unknown_role_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_tty(monkeypatch)
    monkeypatch.chdir(ROOT)
    rc = main(["rollback", "demo", "--role", "bogus", "-o", "json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == ["error: unknown role 'bogus' (one of registry, lb, server, agent)"]


def test_rollback_of_a_role_the_plex_lacks_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["roles"]["agent"]["count"] = 0
    f = tmp_path / "noagents.yaml"
    f.write_text(yaml.safe_dump(data))
    rc = main(["rollback", str(f), "--role", "agent"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "has no agent nodes" in err[0]


class Engine:
    """A Docker engine holding the plex's registry containers and cache volume."""

    def __init__(self, containers: list[str], volumes: list[str]) -> None:
        self.names = containers
        self.volumes = volumes

    def containers(self, plex: str) -> list[Any]:
        return [type("C", (), {"name": n}) for n in self.names]

    def remove(self, name: str) -> None:
        self.names.remove(name)

    def volume_exists(self, name: str) -> bool:
        return name in self.volumes

    def delete_volume(self, name: str) -> None:
        self.volumes.remove(name)


@pytest.mark.parametrize("everything", [False, True])
def test_destroy_removes_the_docker_registry_and_its_cache_only_with_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, everything: bool
) -> None:
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path))
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["registry"] = {**data.get("registry", {}), "runtime": "docker"}
    plex = parse_plex(yaml.safe_dump(data), "docker.yaml")
    incus = FakeIncus.holding(Observed(plex.name, plex.incus.project))
    engine = Engine(["demo-registry-docker.io"], ["demo-registry-cache"])
    removed = destroy(plex, incus, everything=everything, docker=engine)  # type: ignore[arg-type]
    assert "demo-registry-docker.io" in removed and engine.names == []
    assert engine.volumes == ([] if everything else ["demo-registry-cache"])
    with pytest.raises(UsageError, match="runs its registry on Docker"):
        destroy(plex, incus, everything=everything)


def _plex_file(tmp_path: Path, change: dict[str, Any], name: str = "bad.yaml") -> Path:
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    for key, value in change.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    f = tmp_path / name
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


def _line_of(f: Path, text: str) -> int:
    return next(i for i, line in enumerate(f.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    ("change", "field", "at", "problem"),
    [
        (
            {
                "registry": {
                    "engine": "distribution",
                    "upstreams": [
                        {
                            "name": "docker.io",
                            "url": "https://registry-1.docker.io",
                            "tls_verify": False,
                        }
                    ],
                }
            },
            "registry.upstreams[0].tls_verify",
            "tls_verify",
            "cannot skip TLS verification",
        ),
        (
            {
                "registry": {
                    "engine": "zot",
                    "upstreams": [{"name": "Docker.IO_", "url": "https://registry-1.docker.io"}],
                }
            },
            "registry.upstreams[0].name",
            "Docker.IO_",
            "cannot be a zot repository prefix",
        ),
        (
            {"nightly": {"smoke_image": "quay.io/busybox:1.36"}},
            "nightly.smoke_image",
            "smoke_image",
            "is not one of registry.upstreams",
        ),
        (
            {"os": {"base": "debian-bookworm", "virt": "vm"}},
            "os.base",
            "base: debian-bookworm",
            "cannot be baked as a VM",
        ),
        (
            {"os": {"base": "no-such-base"}},
            "os.base",
            "no-such-base",
            "no base image 'no-such-base'",
        ),
    ],
)
def test_validate_reports_the_rules_bake_and_nightly_apply(
    tmp_path: Path, change: dict[str, Any], field: str, at: str, problem: str
) -> None:
    f = _plex_file(tmp_path, change)
    errors = validate([f], ROOT).errors
    assert errors, "validate accepted a plex that bake or nightly rejects"
    line = _line_of(f, at)
    assert any(
        e.path == field
        and problem in e.problem
        and e.file == str(f)
        and e.line is not None
        and abs(e.line - line) <= 1
        for e in errors
    ), [e.message for e in errors]


def test_the_shipped_plexes_pass_every_rule() -> None:
    assert validate(sorted((ROOT / "plexes").glob("*.yaml")), ROOT).errors == []
