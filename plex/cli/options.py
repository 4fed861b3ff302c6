"""The options plan, deploy, reset and rollback share: one definition of each flag and its help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ReplaceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--replace",
        "-r",
        help="replace NODE even if unchanged, rolling (short names work; the master's own name "
        "too: it re-joins the cluster); 'master' or 'all' rebuild the cluster (cascade)",
        metavar="NODE",
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask before applying")]
ParallelOpt = Annotated[
    int,
    typer.Option(
        help="nodes created at once inside a wave (0: adapt to the host's cores and memory)"
    ),
]
MaxUnavailableOpt = Annotated[
    int | None,
    typer.Option(
        "--max-unavailable",
        min=1,
        help="rolling: agents replaced at once (default 25% of the agents, at least 1)",
    ),
]
EvacuateOpt = Annotated[
    bool,
    typer.Option(
        "--evacuate",
        help="re-create the nodes of a cluster member that is down on the online members "
        "(same node identity, another instance name; docs/cluster.md)",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="allow a plan that loses etcd quorum; when applying, go on past a failed drain or "
        "node deletion (reported as skipped)",
    ),
]
# What `plex plan` reads from files instead of asking Incus and the image catalog.
ObservedOpt = Annotated[
    Path | None,
    typer.Option(help="plan against this snapshot instead of asking Incus", metavar="FILE.json"),
]
ImagesOpt = Annotated[
    Path | None,
    typer.Option(
        help="current images {role: {digest, fingerprint, alias}} instead of the catalog",
        metavar="FILE.json",
    ),
]
