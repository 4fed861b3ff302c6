"""plex image: list, export, import and prune baked images (portable .tar.zst artifacts)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex
from plex.model.sizes import human_size

image_app = typer.Typer(no_args_is_help=True, help="Image artifacts: list, export, import, prune.")
app.add_typer(
    image_app,
    name="image",
    help="List, export (.tar.zst + manifest), import and prune baked images.",
)

DEFAULT_DEST = Path("images/out")


@contextmanager
def _bytes_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A byte counter on the progress display; updates at most ten times a second."""

    prog = ui.progress()
    task = prog.add_task("starting", label=label, total=None)
    last = 0.0
    started = False

    def report(done: int, total: int) -> None:
        nonlocal last, started
        if not started:
            # Shown from the first byte on: a command failing before that prints no bar.
            prog.start()
            started = True
        now = time.monotonic()
        if now - last < 0.1 and done < total:
            return
        last = now
        prog.update(
            task,
            completed=done,
            total=total or None,
            description=f"{human_size(done)} / {human_size(total)}",
        )

    try:
        yield report
    finally:
        if started:
            prog.stop()


@image_app.command("list")
def list_cli(plex: PlexArg, output: OutputOpt = ui.Output.TABLE) -> None:
    """The plex's images: catalog joined with Incus, newest first per role."""
    from plex.backends.incus.client import connect
    from plex.services.images import list_images

    as_json = check_output(output)
    p = get_plex(plex)
    rows = list_images(connect(p.incus, create=False), p.name)
    if as_json:
        ui.print_json({"plex": p.name, "images": [r.to_json() for r in rows]})
        return
    ui.table(
        f"images of {p.name}",
        ["role", "digest", "fingerprint", "size", "baked", "aliases", "status"],
        [
            [
                r.role,
                r.digest12,
                r.fingerprint12,
                human_size(r.size),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.baked_at)) if r.baked_at else "-",
                " ".join(r.aliases) or "-",
                ", ".join(r.markers) or "-",
            ]
            for r in rows
        ],
    )


@image_app.command("export")
def export_cli(
    plex: PlexArg,
    role: Annotated[str, typer.Argument(help="role: lb, server, agent or registry")],
    digest: Annotated[
        str | None, typer.Option(help="image digest (or a prefix); default: the newest")
    ] = None,
    dest: Annotated[
        Path, typer.Option(help="directory for the .tar.zst and its manifest")
    ] = DEFAULT_DEST,
    level: Annotated[int, typer.Option(help="zstd compression level (1-19)", min=1, max=19)] = 3,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Write <plex>-<role>-<digest12>.tar.zst (a unified Incus image) and its .json manifest."""
    from plex.backends.incus.client import connect
    from plex.services.images import artifact_name, export_image

    as_json = check_output(output)
    p = get_plex(plex)
    incus = connect(p.incus, create=False)
    with (
        ui.step(f"export {p.name}/{role}", quiet=as_json),
        _bytes_progress(f"{p.name}/{role}") as report,
    ):
        m = export_image(incus, p.name, role, dest, digest, level=level, progress=report)
    path = dest / artifact_name(m.plex, m.role, m.digest)
    if as_json:
        ui.print_json({"artifact": str(path), "manifest": m.to_json()})
        return
    ratio = (
        f" ({m.size / m.uncompressed_size:.0%} of {human_size(m.uncompressed_size)})"
        if m.uncompressed_size
        else ""
    )
    ui.info(
        f"{path}: {human_size(m.size)}{ratio}, {len(m.packages)} packages, sha256 {m.sha256[:16]}"
    )


@image_app.command("import")
def import_cli(
    file: Annotated[Path, typer.Argument(help="a .tar.zst written by plex image export")],
    manifest: Annotated[
        Path | None, typer.Option(help="its manifest (default: the .json next to it)")
    ] = None,
    plex: Annotated[
        str | None,
        typer.Option(
            help="plex name or file whose Incus to import into (default: the manifest's plex)"
        ),
    ] = None,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Verify and import an artifact, pinned as <plex>/<role>@<digest12> (deploy's images stay)."""
    from plex.backends.incus.client import connect
    from plex.services.images import already_imported, import_image, open_artifact

    as_json = check_output(output)
    m = open_artifact(file, manifest)
    p = get_plex(plex or m.plex)
    incus = connect(p.incus)
    present = already_imported(incus, m) is not None
    with (
        ui.step(f"import {m.plex}/{m.role}@{m.short}", quiet=as_json),
        _bytes_progress(f"{m.plex}/{m.role}") as report,
    ):
        import_image(incus, file, manifest, progress=report)
    if as_json:
        ui.print_json({"imported": not present, "manifest": m.to_json()})
        return
    what = "already present" if present else "imported"
    ui.info(
        f"{m.plex}/{m.role}@{m.short}: {what}, pinned as that alias; "
        f"the moving alias {m.plex}/{m.role} (what deploy uses) is unchanged"
    )


@image_app.command("prune")
def prune_cli(
    plex: PlexArg,
    keep: Annotated[
        int, typer.Option(help="generations kept per role (besides images in use)", min=0)
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show, delete nothing")] = False,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Delete old generations no alias, channel or node uses, and unneeded package layers."""
    from plex.backends.incus.client import connect
    from plex.services.images import apply_prune, plan_prune
    from plex.store.lock import plex_lock

    as_json = check_output(output)
    p = get_plex(plex)
    incus = connect(p.incus, create=False)
    if dry_run:
        plan = plan_prune(incus, p.name, keep)
    else:
        with plex_lock(p.name, "bake"):  # never while a bake or import writes the catalog
            plan = plan_prune(incus, p.name, keep)
            apply_prune(incus, plan)
    if as_json:
        ui.print_json({"dry_run": dry_run, **plan.to_json()})
        return
    verb = "would delete" if dry_run else "deleted"
    rows = [[e.role, e.digest[:12], verb] for e in plan.remove]
    rows += [
        [k.entry.role, k.entry.digest[:12], "kept: " + ", ".join(k.reasons)] for k in plan.kept
    ]
    rows += [["(package layer)", la.package_digest[:12], verb] for la in plan.layers]
    if not rows:
        ui.info(f"{p.name}: no images in the catalog, nothing to prune")
        return
    ui.table(f"prune {p.name} --keep {keep}", ["role", "digest", "result"], rows)
    if plan.cache_files:
        ui.info(f"{verb} {len(plan.cache_files)} cached layer file(s)")
