"""plex registry ...: the plex's pull-through cache. `config` prints the engine's rendered config;
`up`, `warm` and `stats` run plex.services.registry on the backend of `registry.runtime`.

`registry_app` is the sub-app other registry commands (up, warm, stats) register on.
Nothing printed here ever carries an upstream password: configs are rendered without
credentials (zot keeps them in a separate file anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex
from plex.errors import BackendError, UsageError
from plex.model.enums import Engine, Runtime
from plex.model.sizes import human_size
from plex.plexfile.home import project_root

if TYPE_CHECKING:  # the models, and the use cases (pylxd, docker): only when a command runs
    from plex.model.plex import Plex
    from plex.services import registry as ops

registry_app = typer.Typer(
    name="registry",
    help="The plex's pull-through registry cache.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


@registry_app.command("config")
def config_cli(
    plex: PlexArg,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            "-u",
            help="distribution: print only this upstream's config",
            metavar="NAME",
        ),
    ] = None,
    nodes: Annotated[
        bool, typer.Option("--nodes", help="print the node side instead: RKE2 registries.yaml")
    ] = False,
) -> None:
    """Print the registry engine's rendered config as JSON (never with passwords).

    zot: its config.json. distribution: one config per upstream keyed by systemd unit, or only
    one with --upstream. --nodes: the RKE2 registries.yaml the nodes get.
    """
    from plex.registry import mirrors
    from plex.registry.distribution import distribution_proxies
    from plex.registry.zot import zot_config

    p = get_plex(plex)
    if nodes:
        ui.print_json(mirrors.registries_yaml(p))
        return
    if p.registry.engine is Engine.ZOT:
        if upstream is not None:
            raise UsageError("--upstream is for the distribution engine (zot serves all at once)")
        ui.print_json(zot_config(p))
        return
    proxies = distribution_proxies(p)
    if upstream is not None:
        match = [x for x in proxies if x.upstream.name == upstream]
        if not match:
            raise UsageError(
                f"plex '{p.name}' has no registry upstream '{upstream}'",
                hint="upstreams: " + ", ".join(x.upstream.name for x in proxies),
            )
        ui.print_json(match[0].config)
        return
    ui.print_json({x.unit_name: x.config for x in proxies})


# --------------------------------------------------------------------------------------------
# up / warm / stats: thin wrappers over plex.services.registry, one backend per registry.runtime.

ReplaceRegistryOpt = Annotated[
    bool,
    typer.Option(
        "--replace", help="recreate the registry node (the cache volume is kept and reattached)"
    ),
]
ImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="image list, one reference a line (default: the RKE2 release's list)",
        metavar="FILE",
    ),
]


def _cache(p: Plex) -> ops.Cache:
    from plex.services import registry as ops

    if p.registry.runtime is Runtime.DOCKER:
        from plex.backends.docker import SdkDocker

        return ops.DockerCache(p, SdkDocker())
    from plex.backends.incus.client import connect

    return ops.IncusCache(p, connect(p.incus))


@registry_app.command("up")
def up_cli(
    plex: PlexArg, replace: ReplaceRegistryOpt = False, output: OutputOpt = ui.Output.TABLE
) -> None:
    """Bring up the pull-through cache on a volume that reset and destroy keep.

    Runtime incus: the registry node alone. Runtime docker: its containers.
    """
    from plex.services import registry as ops

    as_json = check_output(output)
    p = get_plex(plex)
    if p.registry.runtime is Runtime.DOCKER:
        from plex.backends.docker import SdkDocker

        result = ops.up_docker(p, SdkDocker())
    else:
        from plex.backends.incus.client import connect

        def report(node: str, msg: str) -> None:
            if not as_json:
                ui.info(f"  {node}: {msg}")

        result, _, _ = ops.up_incus(
            p, connect(p.incus), project_root(), replace=replace, report=report
        )
    if as_json:
        ui.print_json(result.to_json())
        return
    for line in result.actions:
        ui.info(line)
    ui.info(f"cache volume {result.volume}" + (" (created)" if result.volume_created else ""))
    if result.secrets_pushed:
        ui.info(f"upstream logins written: {', '.join(result.secrets_pushed)}")
    ui.info(
        f"[green]up[/green] ({result.engine} on {result.runtime}) in "
        f"{result.seconds:.1f}s: {', '.join(result.endpoints)}"
    )


@registry_app.command("warm")
def warm_cli(plex: PlexArg, images: ImagesOpt = None, output: OutputOpt = ui.Output.TABLE) -> None:
    """Pull an image list through the cache (before a reset), from the registry itself."""
    from plex.services import registry as ops

    as_json = check_output(output)
    p = get_plex(plex)
    if images is not None:
        try:
            refs = ops.read_image_list(images.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"cannot read image list {images}: {e.strerror}") from None
    else:
        refs = ops.default_image_list(p)
    if not refs:
        raise UsageError("the image list is empty")
    cache = _cache(p)

    def report(w: ops.Warmed) -> None:
        if not as_json:
            mark = "[green]ok[/green]" if w.ok else f"[red]failed[/red]: {w.error}"
            ui.info(
                f"  {w.image}: {mark} ({w.blobs} blobs, {human_size(w.bytes, zero='0 B')}, "
                f"{w.seconds:.1f}s)"
            )

    results = ops.warm(p, cache, refs, report)
    failed = ops.failed_images(results)
    if as_json:
        ui.print_json(
            {"plex": p.name, "images": [w.to_json() for w in results], "failed": len(failed)}
        )
    if failed:
        raise BackendError(
            f"{len(failed)} of {len(results)} images could not be warmed",
            hint="plex registry stats " + p.name,
        )


@registry_app.command("stats")
def stats_cli(plex: PlexArg, output: OutputOpt = ui.Output.TABLE) -> None:
    """Cached repositories and tags, the cache's size, and hits/misses where exposed."""
    from plex.services import registry as ops

    as_json = check_output(output)
    p = get_plex(plex)
    st = ops.stats(p, _cache(p), p.registry.runtime.value)
    if as_json:
        ui.print_json(st.to_json())
        _check_upstreams(p)
        return
    ui.table(
        f"registry cache of {p.name} ({st.engine} on {st.runtime})",
        ["upstream", "repository", "tags"],
        [[r.upstream, r.name, ", ".join(r.tags)] for r in st.repositories],
    )
    hm = "not exposed" if st.hits is None else f"{st.hits} hits, {st.misses} misses"
    ui.info(f"size {human_size(st.size_bytes, zero='0 B')}; {hm} ({st.note})")
    _check_upstreams(p)


def _check_upstreams(p: Plex) -> None:
    """After the numbers: can the cache still reach its upstreams? One line per broken one,
    exit 5."""
    if p.registry.runtime is not Runtime.INCUS:
        return  # the Docker host's own resolver and routes: nothing plex configured
    from plex.backends.incus.client import connect
    from plex.services import registry as ops

    failed = ops.upstream_failures(p, connect(p.incus), project_root())
    for earlier in failed[:-1]:
        ui.error(earlier.message)
    if failed:
        raise failed[-1]
