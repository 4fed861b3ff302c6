"""plex plan: what a deploy would do, node by node and wave by wave, without doing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex
from plex.cli.options import (
    EvacuateOpt,
    ForceOpt,
    ImagesOpt,
    MaxUnavailableOpt,
    ObservedOpt,
    ReplaceOpt,
)
from plex.errors import BackendError, ConfigError, UsageError
from plex.model.enums import Role

if TYPE_CHECKING:
    from plex.deploy.actions import Plan
    from plex.model.image import ImageRef
    from plex.model.observed import Observed
    from plex.model.plex import Plex


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(str(path), "", f"not valid JSON: {e}") from None


def load_observed_file(path: Path) -> Observed:
    """An `Observed` snapshot saved as JSON (Observed.to_json)."""
    from plex.model.observed import Observed

    data = _read_json(path)
    try:
        return Observed.from_json(data)
    except (KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            str(path),
            "",
            f"not an observed snapshot ({e!r})",
            hint="expected {plex, project, instances: {name: {...}}}",
        ) from None


def load_images_file(path: Path) -> dict[Role, ImageRef]:
    """`{role: {digest, fingerprint, alias}}`, as `ImageRef.to_json` writes each entry."""
    from plex.model.image import ImageRef

    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "must be a JSON object {role: {digest, fingerprint}}")
    out: dict[Role, ImageRef] = {}
    for key, entry in data.items():
        try:
            role = Role(key)
        except ValueError:
            raise ConfigError(
                str(path), key, f"unknown role (one of {', '.join(r.value for r in Role)})"
            ) from None
        if not isinstance(entry, dict) or not {"digest", "fingerprint"} <= entry.keys():
            raise ConfigError(str(path), key, "needs 'digest' and 'fingerprint'")
        out[role] = ImageRef.from_json({**entry, "role": role.value})
    return out


def observe(plex: Plex, evacuate: bool = False) -> Observed:
    from plex.backends.incus.client import connect  # pylxd only when a daemon is really wanted
    from plex.model.observed import Observed
    from plex.services.deploy import observe_for_plan

    incus = connect(plex.incus, create=False)  # planning never creates anything
    try:
        # The plan shows what the deploy would do: the same (settled, for --evacuate) view.
        return observe_for_plan(plex, incus, evacuate)
    except BackendError as e:
        # Incus lists no instances for a missing project but fails on its images: a plex
        # never deployed plans as a fresh deploy.
        if "Project not found" in e.message:
            return Observed(plex.name, plex.incus.project)
        raise


def plan_for(
    plex: Plex,
    replace: list[str],
    force: bool,
    observed_file: Path | None,
    images_file: Path | None,
    max_unavailable: int | None = None,
    evacuate: bool = False,
) -> Plan:
    observed = load_observed_file(observed_file) if observed_file else observe(plex, evacuate)
    if observed.plex != plex.name:
        raise UsageError(f"the observed snapshot is of plex '{observed.plex}', not '{plex.name}'")
    from plex.services.deploy import plan_observed

    images = load_images_file(images_file) if images_file else None
    return plan_observed(
        plex,
        observed,
        images,
        replace=replace,
        force=force,
        max_unavailable=max_unavailable,
        evacuate=evacuate,
    )


def render(plan: Plan, err: bool = False) -> None:
    """The one rendering of a Plan (plan, deploy, reset, rollback); on stderr (`err`) when
    stdout carries JSON."""
    from plex.deploy.actions import Verb

    ui.table(
        f"plan for {plan.plex} · project {plan.project}",
        ["", "node", "action", "reason"],
        plan.render_rows(),
        err=err,
    )
    if plan.waves:
        ui.table(
            "waves",
            ["wave", "nodes (a wave starts when the previous one is healthy)"],
            [[str(i), ", ".join(a.node for a in wave)] for i, wave in enumerate(plan.waves, 1)],
            err=err,
        )
    for note in plan.notes:
        ui.warn(note)
    if not plan.empty:
        ui.info(f"strategy: {plan.strategy.value}: {plan.why}")
    if plan.cascade_from:
        ui.info(
            f"replacing {plan.cascade_from} (the master) rebuilds the cluster: every other "
            "server and agent is replaced with it"
        )
    if plan.empty:
        ui.info(f"no changes: plex '{plan.plex}' matches its file and images")
    else:
        ui.info(
            f"plan: {plan.count(Verb.CREATE)} to create, {plan.count(Verb.REPLACE)} to "
            f"replace, {plan.count(Verb.START)} to start, {plan.count(Verb.DELETE)} to "
            f"delete, {plan.count(Verb.KEEP)} kept "
            f"in {len(plan.waves)} wave(s)"
        )


@app.command("plan")
def plan_cli(
    plex: PlexArg,
    replace: ReplaceOpt = None,
    force: ForceOpt = False,
    observed: ObservedOpt = None,
    images: ImagesOpt = None,
    max_unavailable: MaxUnavailableOpt = None,
    evacuate: EvacuateOpt = False,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Show what `plex deploy` would create, replace, start and delete, in health-gated waves,
    and which strategy (rolling or cascade) and why."""
    as_json = check_output(output)
    p = get_plex(plex)
    result = plan_for(p, replace or [], force, observed, images, max_unavailable, evacuate)
    if as_json:
        ui.print_json(result.to_json())
    else:
        render(result)
