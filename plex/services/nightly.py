"""plex nightly: rebuild the staging plex as a flat list of named steps.

    bake (latest, cache-aware) -> deploy --replace master -> smoke -> promote -> prune

A step runs only if every step before it passed, so a failure anywhere leaves `stable` (the
channel records, the catalog channel and the `<plex>/<role>@stable` aliases) exactly as it was
and the run exits non-zero. Whatever happened, the run's report (JSON + HTML) is written under
`<state>/<plex>/nightly/` before the error reaches the caller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.backends.packer import PackerCli
from plex.bake.recipe import Recipe
from plex.errors import Interrupted, PlexError
from plex.model.plex import Plex, Role, Virt
from plex.model.record import record_json
from plex.services import nightly_report as report_mod
from plex.services.bake import Baker, BakeResult, Paths, plan_recipes
from plex.services.bake_vm import VmBaker, check_vm_bases
from plex.services.deploy import deploy
from plex.services.images import prune
from plex.services.progress import unreported
from plex.services.smoke import smoke
from plex.store import channels as ch
from plex.store.catalog import load_catalog, save_catalog
from plex.store.lock import plex_lock
from plex.store.state import cache_root

Say = Callable[[str, str], None]  # (step, what is happening)
STEPS = ("bake", "deploy", "smoke", "promote", "prune")


class Status:
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class StepRecord:
    name: str
    status: str = Status.SKIPPED
    started_at: float = 0.0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return record_json(self)


@dataclass
class NightlyRun:
    """One run, as the report records it."""

    plex: str
    run_id: str
    started_at: float
    steps: list[StepRecord]
    bake: list[dict[str, Any]] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)
    smoke: list[dict[str, Any]] = field(default_factory=list)
    promoted: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    report_json: Path | None = None
    report_html: Path | None = None
    error: PlexError | None = None  # the failure that stopped the run (not serialised)

    @property
    def ok(self) -> bool:
        return all(s.status == Status.OK for s in self.steps)

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if s.status == Status.FAILED), None)

    def step(self, name: str) -> StepRecord:
        return next(s for s in self.steps if s.name == name)

    def to_json(self) -> dict[str, Any]:
        bake = self.step("bake")
        deploy = self.step("deploy")
        return {
            "format": report_mod.FORMAT,
            "plex": self.plex,
            "run": self.run_id,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 2),
            "ok": self.ok,
            "failed_step": self.failed_step,
            "error": self.error.message if self.error else None,
            "steps": [s.to_json() for s in self.steps],
            # The two numbers the history chart follows.
            "bake_seconds": round(bake.seconds, 2) if bake.status != Status.SKIPPED else None,
            "reset_seconds": (
                round(deploy.seconds, 2) if deploy.status != Status.SKIPPED else None
            ),
            "cache_hits": sum(1 for b in self.bake if b.get("cached")),
            "bake": self.bake,
            "deploy": self.deploy,
            "smoke": self.smoke,
            "promoted": self.promoted,
            "pruned": self.pruned,
        }

    def raise_for_failure(self) -> None:
        if self.error is not None:
            raise self.error


def new_run_id(now: float | None = None) -> str:
    t = time.gmtime(time.time() if now is None else now)
    # Sorts by time; the suffix keeps two runs in one second apart.
    return time.strftime("%Y%m%dT%H%M%SZ", t) + "-" + uuid.uuid4().hex[:4]


class Nightly:
    """The nightly of one staging plex against its Incus project."""

    def __init__(
        self,
        plex: Plex,
        incus: Incus,
        root: Path,
        *,
        keep: int | None = None,
        parallel: int = 4,
        say: Say = unreported,
        run_id: str | None = None,
    ) -> None:
        self.plex = plex
        self.incus = incus
        self.root = root
        self.paths = Paths.under(root)
        self.keep = plex.nightly.keep if keep is None else keep
        self.parallel = parallel
        self.say = say
        started = time.time()
        self.run_state = NightlyRun(
            plex.name, run_id or new_run_id(started), started, [StepRecord(n) for n in STEPS]
        )
        self._results: list[BakeResult] = []
        self._recipes: dict[Role, Recipe] = {}

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> NightlyRun:
        run = self.run_state
        t0 = time.monotonic()
        try:
            with plex_lock(self.plex.name, "nightly"):
                for name, fn in self.steps():
                    with self._step(run.step(name)):
                        fn()
                    if run.error is not None:
                        break
        finally:
            run.seconds = time.monotonic() - t0
            run.report_json, run.report_html = report_mod.write_report(
                run.to_json(), report_mod.report_dir(self.plex.name)
            )
        return run

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("bake", self.bake),
            ("deploy", self.deploy),
            ("smoke", self.smoke),
            ("promote", self.promote),
            ("prune", self.prune),
        ]

    @contextmanager
    def _step(self, rec: StepRecord) -> Iterator[None]:
        rec.started_at = round(time.time(), 3)
        start = time.monotonic()
        self.say(rec.name, "start")
        try:
            yield
            rec.status = Status.OK
        except PlexError as e:
            rec.status = Status.FAILED
            rec.error = e.message
            e.message = f"nightly of {self.plex.name} failed at {rec.name}: {e.message}"
            self.run_state.error = e
            if isinstance(e, Interrupted):
                raise  # Ctrl-C/SIGTERM: the report is still written (run()'s finally)
        except BaseException as e:
            # A bug: record it for the report, keep its traceback.
            rec.status = Status.FAILED
            rec.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            rec.seconds = time.monotonic() - start
            self.say(rec.name, rec.status)

    # -- the steps ----------------------------------------------------------------------------

    def roles(self) -> list[Role]:
        return [r for r, rc in self.plex.roles.items() if rc.count > 0]

    def bake(self) -> None:
        """Every role from the newest recipes (`latest`): the nightly is what tests them."""
        roles = self.roles()
        vm_roles = [r for r in roles if self.plex.os_for(r).virt is Virt.VM]
        ct_roles = [r for r in roles if r not in vm_roles]
        results: list[BakeResult] = []
        if vm_roles:
            check_vm_bases(self.plex, vm_roles, self.paths)
            packer = PackerCli(env={"PACKER_CACHE_DIR": str(cache_root() / "packer")})
            results += VmBaker(
                self.plex,
                self.incus,
                packer,
                self.paths,
                lambda role, msg: self.say("bake", f"{role.value}: {msg}"),
            ).bake(vm_roles)
        if ct_roles:
            baker = Baker(
                self.plex,
                self.incus,
                self.paths,
                lambda role, msg: self.say("bake", f"{role.value}: {msg}"),
                channel=ch.Channel.LATEST,
            )
            results += baker.bake(ct_roles, parallel=self.parallel)
            # The recipes just baked, for the package layers promote records.
            self._recipes = plan_recipes(self.plex, ct_roles, self.paths, ch.Channel.LATEST)
        self._results = results
        self.run_state.bake = [r.to_json() for r in results]

    def deploy(self) -> None:
        """`plex deploy --replace master`: a new cluster on the new images."""
        plan, result = deploy(
            self.plex,
            self.incus,
            self.root,
            replace=["master"],
            parallel=8,
            report=lambda node, msg: self.say("deploy", f"{node}: {msg}"),
        )
        self.run_state.deploy = {
            "actions": len(plan.actions),
            "nodes": [a.node for w in plan.waves for a in w],
            "waves": [{"nodes": w.nodes, "seconds": round(w.seconds, 2)} for w in result.waves],
            "seconds": round(result.seconds, 2),
        }

    def smoke(self) -> None:
        expected = {r.role: r.digest for r in self._results}
        results = smoke(
            self.plex,
            self.incus,
            self.root,
            expected,
            self.incus.observe(self.plex.name),
            report=lambda node, msg: self.say("smoke", f"{node}: {msg}"),
        )
        self.run_state.smoke = [r.to_json() for r in results]

    def promote(self) -> None:
        """What passed becomes stable: aliases first (restored if any fails), then the files."""
        moved: list[tuple[str, str | None]] = []
        try:
            for r in self._results:
                alias = ch.channel_alias(self.plex.name, r.role)
                prev = self.incus.image_by_alias(alias)
                self.incus.set_alias(
                    alias, r.fingerprint, f"passed nightly {self.run_state.run_id}"
                )
                moved.append((alias, prev.fingerprint if prev else None))
        except BaseException:
            for alias, fp in reversed(moved):
                if fp is None:
                    self.incus.delete_alias(alias)
                else:
                    self.incus.set_alias(alias, fp)
            raise
        catalog = load_catalog(self.plex.name)
        before = dict(catalog.channels.get(ch.Channel.STABLE.value, {}))
        with plex_lock(self.plex.name, "bake"):  # the catalog's one writer
            catalog = load_catalog(self.plex.name)
            for r in self._results:
                catalog = catalog.promote(ch.Channel.STABLE.value, r.role.value, r.digest)
            save_catalog(catalog)
        records = [
            ch.record_for(role, rec.package, self.plex.name, self.run_state.run_id)
            for role, rec in self._recipes.items()
            if rec.package.base.kind in ch.LAYERED_KINDS
        ]
        if records:
            ch.save_channels(ch.load_channels().promote(ch.Channel.STABLE, records))
        lineage = {
            role: ch.lineage_key(role, rec.package)
            for role, rec in self._recipes.items()
            if rec.package.base.kind in ch.LAYERED_KINDS
        }
        self.run_state.promoted = [
            {
                "role": r.role.value,
                "digest": r.digest,
                "fingerprint": r.fingerprint,
                "previous": before.get(r.role.value),
                "alias": ch.channel_alias(self.plex.name, r.role),
                "package_digest": r.package_digest,
                "lineage": lineage.get(r.role),
            }
            for r in self._results
        ]

    def prune(self) -> None:
        removed = prune(self.incus, self.plex.name, self.keep)
        self.run_state.pruned = [{"role": e.role, "digest": e.digest} for e in removed]
