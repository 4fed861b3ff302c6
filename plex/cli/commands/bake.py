"""plex bake: build the role images of a plex (cache-aware, roles in parallel)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex, parse_role
from plex.errors import UsageError
from plex.model.enums import Role, Virt
from plex.model.sizes import human_size
from plex.plexfile.home import project_root

if TYPE_CHECKING:
    from plex.model.plex import Plex

ROLE_HELP = "role to bake: lb, server, agent, registry or all (repeatable)"


def parse_roles(plex: Plex, types: list[str]) -> list[Role]:
    configured = [r for r, rc in plex.roles.items() if rc.count > 0]
    if not types or "all" in types:
        return configured
    out: list[Role] = []
    for t in types:
        role = parse_role(plex, t)
        if role not in out:
            out.append(role)
    return out


@app.command("bake")
def bake_cli(
    plex: PlexArg,
    types: Annotated[list[str] | None, typer.Option("--type", "-t", help=ROLE_HELP)] = None,
    virt: Annotated[
        Virt | None,
        typer.Option("--virt", help="container or vm (default: the plex's per-role setting)"),
    ] = None,
    parallel: Annotated[int, typer.Option(help="roles baked at once")] = 4,
    channel: Annotated[
        str,
        typer.Option(
            help="package layers to build on: stable (what the "
            "last passing nightly promoted, when there is one) "
            "or latest (what the recipes say now)"
        ),
    ] = "stable",
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Bake role images: an unchanged recipe is a no-op; plex data changes rebuild a thin layer."""
    as_json = check_output(output)
    if channel not in ("stable", "latest"):
        raise UsageError(f"--channel must be stable or latest, not '{channel}'")
    p = get_plex(plex)
    roles = parse_roles(p, types or [])
    if virt is not None and virt not in ("container", "vm"):
        raise UsageError(f"--virt must be container or vm, not '{virt}'")
    vm_roles = [r for r in roles if (Virt(virt) if virt else p.os_for(r).virt) is Virt.VM]
    if vm_roles:
        results = bake_vm_roles(p, vm_roles, project_root())
        roles = [r for r in roles if r not in vm_roles]
    else:
        results = []
    if roles:
        results += _bake_containers(p, roles, parallel, channel)
    _render(results, as_json)


def _bake_containers(p: Plex, roles: list[Role], parallel: int, channel: str = "stable") -> list:  # type: ignore[type-arg]
    from plex.backends.incus.client import connect
    from plex.services.bake import Baker, Paths

    incus = connect(p.incus)
    with ui.progress_by(lambda r: f"{p.name}/{r.value}", roles) as report:
        baker = Baker(p, incus, Paths.under(project_root()), report, channel=channel)
        return baker.bake(roles, parallel=parallel)


def bake_vm_roles(plex: Plex, roles: list[Role], root: Path) -> list:  # type: ignore[type-arg]
    """`plex bake --virt vm`: bake `roles` as MicroOS VM images, with progress on the terminal."""
    from plex.backends.incus.client import connect
    from plex.backends.packer import PackerCli
    from plex.services.bake import Paths
    from plex.services.bake_vm import VmBaker, check_vm_bases
    from plex.store.state import cache_root

    paths = Paths.under(root)
    check_vm_bases(plex, roles, paths)  # a wrong base fails before any connection or download
    packer = PackerCli(env={"PACKER_CACHE_DIR": str(cache_root() / "packer")})
    incus = connect(plex.incus)
    with ui.progress_by(lambda r: f"{plex.name}/{r.value}", roles) as report:

        def report_packer(role: Role, msg: str) -> None:
            # Packer output may hold '[...]', which rich would read as markup.
            report(role, msg[:100].replace("[", "\\["))

        return VmBaker(plex, incus, packer, paths, report_packer).bake(roles)


def _render(results: list, as_json: bool) -> None:  # type: ignore[type-arg]
    if as_json:
        ui.print_json({"results": [r.to_json() for r in results]})
        return
    ui.table(
        "bake",
        ["role", "digest", "result", "package layer", "seconds", "size"],
        [
            [
                r.role.value,
                r.digest[:12],
                "cached"
                if r.cached
                else ("built (package layer cached)" if r.package_cached else "built"),
                f"{r.package_digest[:12]} ({r.channel})" if r.channel else "-",
                f"{r.seconds:.1f}",
                human_size(r.size),
            ]
            for r in results
        ],
    )
