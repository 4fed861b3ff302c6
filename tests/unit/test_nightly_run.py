"""The nightly's step runner and its promote step, with scripted steps over the in-memory Incus.

Real Incus runs of the whole nightly are in tests/integration/test_nightly.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from plex.errors import Interrupted, ProbeError
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex
from plex.services.bake import BakeResult
from plex.services.nightly import STEPS, Nightly, NightlyRun
from plex.services.nightly_report import load_history, report_dir
from plex.store.catalog import load_catalog
from plex.store.channels import channel_alias, channels_path
from tests.fixtures.fake_incus import FakeIncus

if TYPE_CHECKING:
    from tests.unit.conftest import Cli

PLEXES = Path(__file__).resolve().parents[2] / "plexes"


def results(tag: str) -> list[BakeResult]:
    return [
        BakeResult(
            r,
            f"{tag}{r.value}".ljust(64, "0"),
            f"fp-{tag}-{r.value}",
            True,
            0.1,
            1 << 20,
            True,
            "p" * 64,
            "latest",
        )
        for r in (Role.REGISTRY, Role.LB, Role.SERVER, Role.AGENT)
    ]


def baked_incus(*tags: str) -> FakeIncus:
    """A project holding the images the scripted bakes of `tags` produced."""
    incus = FakeIncus("plex-demo")
    for r in (r for tag in tags for r in results(tag)):
        incus.add(r.fingerprint, **{"plex.digest": r.digest})
    return incus


class Scripted(Nightly):
    """The real runner and promote step; bake/deploy/smoke/prune are scripted."""

    def __init__(
        self,
        plex: Plex,
        incus: FakeIncus,
        baked: list[BakeResult],
        fail: dict[str, BaseException] | None = None,
    ) -> None:
        super().__init__(plex, incus, PLEXES.parent)
        self.baked = baked
        self.fail = fail or {}
        self.ran: list[str] = []

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        def scripted(name: str) -> Callable[[], None]:
            def step() -> None:
                self.ran.append(name)
                if name == "bake":
                    self._results = self.baked
                    self.run_state.bake = [r.to_json() for r in self.baked]
                if name in self.fail:
                    raise self.fail[name]
                if name == "promote":
                    self.promote()

            return step

        return [(n, scripted(n)) for n in STEPS]


@pytest.fixture
def demo(state_dir: Path) -> Plex:
    return load_plex(PLEXES / "demo.yaml")


def stable(incus: FakeIncus, plex: Plex) -> dict[str, Any]:
    return {
        "aliases": {k: v for k, v in incus.aliases.items() if k.endswith("@stable")},
        "catalog": load_catalog(plex.name).channels.get("stable"),
    }


def test_a_passing_run_promotes_and_writes_its_report(demo: Plex) -> None:
    incus = baked_incus("a")
    run = Scripted(demo, incus, results("a")).run()
    assert run.ok and run.error is None
    assert [s.status for s in run.steps] == ["ok"] * 5
    assert incus.aliases[channel_alias("demo", "server")] == "fp-a-server"
    assert load_catalog("demo").channels["stable"]["agent"] == results("a")[3].digest
    assert [p["previous"] for p in run.promoted] == [None] * 4
    assert run.report_json is not None
    data = json.loads(run.report_json.read_text())
    assert data["ok"] and data["cache_hits"] == 4 and data["failed_step"] is None
    assert (report_dir("demo") / "latest.html").exists()
    run.raise_for_failure()  # nothing to raise


@pytest.mark.parametrize("step", ["bake", "deploy", "smoke"])
def test_a_failing_step_stops_the_run_and_leaves_stable_alone(demo: Plex, step: str) -> None:
    incus = baked_incus("a", "b")
    Scripted(demo, incus, results("a")).run()
    before = stable(incus, demo)
    run = Scripted(
        demo, incus, results("b"), fail={step: ProbeError("demo-agent1: probe 'pull' failed")}
    ).run()
    assert not run.ok and run.failed_step == step
    i = STEPS.index(step)
    assert [s.status for s in run.steps] == ["ok"] * i + ["failed"] + ["skipped"] * (4 - i)
    assert stable(incus, demo) == before
    assert run.error is not None
    assert run.error.message.startswith(f"nightly of demo failed at {step}: demo-agent1")
    with pytest.raises(ProbeError) as e:
        run.raise_for_failure()
    assert e.value.exit_code == 5  # the failing step's own exit code
    # The failed run is in the history, with its error.
    last = load_history(report_dir("demo"))[-1]
    assert last["ok"] is False and last["failed_step"] == step
    assert "probe 'pull' failed" in last["error"]


def test_a_failed_alias_move_puts_every_moved_stable_alias_back(demo: Plex) -> None:
    incus = baked_incus("a", "b")
    Scripted(demo, incus, results("a")).run()
    before = stable(incus, demo)
    channels_before = channels_path().read_bytes() if channels_path().exists() else None
    incus.refuse("alias", channel_alias("demo", "server"))  # the third of four
    incus.calls.clear()
    run = Scripted(demo, incus, results("b")).run()
    assert run.failed_step == "promote"
    assert stable(incus, demo) == before  # registry and lb moved, then moved back
    lb = ("alias", channel_alias("demo", "lb"))
    assert (
        incus.calls.count(lb) == 2 and ("alias", channel_alias("demo", "agent")) not in incus.calls
    )
    assert (channels_path().read_bytes() if channels_path().exists() else None) == channels_before
    assert [s.status for s in run.steps][-1] == "skipped"  # no prune after a failure


def test_first_promotion_that_fails_leaves_no_stable_alias(demo: Plex) -> None:
    incus = baked_incus("a")
    incus.refuse("alias", channel_alias("demo", "agent"))
    run = Scripted(demo, incus, results("a")).run()
    assert run.failed_step == "promote"
    assert not [a for a in incus.aliases if a.endswith("@stable")]
    assert ("delete-alias", channel_alias("demo", "registry")) in incus.calls
    assert load_catalog("demo").channels.get("stable") is None


def test_interrupt_still_writes_the_report_then_propagates(demo: Plex) -> None:
    nightly = Scripted(demo, baked_incus("a"), results("a"), fail={"deploy": Interrupted("x")})
    with pytest.raises(Interrupted):
        nightly.run()
    assert nightly.ran == ["bake", "deploy"]
    last = load_history(report_dir("demo"))[-1]
    assert last["failed_step"] == "deploy" and last["ok"] is False


def test_a_bug_keeps_its_traceback_and_is_still_reported(demo: Plex) -> None:
    nightly = Scripted(demo, baked_incus("a"), results("a"), fail={"smoke": KeyError("oops")})
    with pytest.raises(KeyError):
        nightly.run()
    last = load_history(report_dir("demo"))[-1]
    assert last["steps"][2]["error"] == "KeyError: 'oops'"


def test_run_json_carries_bake_and_reset_times(demo: Plex) -> None:
    run = NightlyRun("demo", "r1", 0.0, [])
    assert run.ok  # no steps, nothing failed
    run = Scripted(demo, baked_incus("a"), results("a")).run()
    data = run.to_json()
    assert data["bake_seconds"] is not None and data["reset_seconds"] is not None
    assert data["run"] == run.run_id and data["plex"] == "demo"


def test_cli_rejects_a_keep_below_one(cli: Cli, plex_home: Path, state_dir: Path) -> None:
    result = cli("nightly", "demo", "--keep", "0")
    assert result.code == 2
    assert "--keep must be 1 or more" in result.err
