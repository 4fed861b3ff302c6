"""plex status: each node's state (where an evacuated node runs, its lost and stale copies),
etcd as the servers see it, the bootstrap manifests and the registry's CI store."""

from __future__ import annotations

from typing import Any

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, app, check_output, get_plex


def _state(r: dict[str, Any]) -> str:
    """A node's state, with where an evacuated node runs and its other copies."""
    out = r["state"]
    if r.get("unreachable"):
        out += f" (unreachable: {r['unreachable']})"
    if r.get("instance") not in (None, r["node"]):
        out += f" as {r['instance']}"
    if r.get("stale_copies"):
        out += f" (stale copies: {', '.join(r['stale_copies'])}; the next deploy deletes them)"
    if r.get("lost_copies"):
        out += f" (lost copies: {', '.join(r['lost_copies'])})"
    return str(out)


@app.command("status")
def status_cli(plex: PlexArg, output: OutputOpt = ui.Output.TABLE) -> None:
    """Nodes, role, state, readiness and image digest against the newest image."""
    from plex.backends.incus.client import connect
    from plex.registry import store
    from plex.services.deploy import bootstrap_rows, etcd_status, status_rows

    as_json = check_output(output)
    p = get_plex(plex)
    incus = connect(p.incus)
    rows = status_rows(p, incus)
    boot = bootstrap_rows(p, incus)
    etcd = etcd_status(p, incus)
    if as_json:
        doc = {"plex": p.name, "nodes": rows, "bootstrap": boot, "etcd": etcd}
        ui.print_json({**doc, "registry_store": store.info(p)})
        return
    ui.table(
        f"status of {p.name}",
        ["node", "role", "address", "state", "ready", "image", "current"],
        [
            [
                r["node"],
                r["role"],
                r["address"],
                _state(r),
                "yes" if r["ready"] else "no",
                r["image"] or "-",
                "yes" if r["up_to_date"] else f"no ({r['current_image']})",
            ]
            for r in rows
        ],
    )
    if etcd is not None:
        ui.table(
            f"etcd of {p.name}: quorum {'yes' if etcd['quorum'] else 'NO'}, leader "
            f"{etcd['leader'] or '-'}, members {', '.join(etcd['members']) or '-'}",
            ["server", "member", "leader", "quorum", "error"],
            [
                [
                    s,
                    # a joined server that does not vote yet (RKE2 promotes it)
                    "learner" if s in etcd["learners"] else "yes" if v["member"] else "no",
                    "yes" if v["leader"] else "no",
                    "yes" if v["quorum"] else "no",
                    v.get("error") or "",
                ]
                for s, v in etcd["servers"].items()
            ],
        )
    if (st := store.info(p)) is not None:
        ui.info(f"registry store: {st['push_prefix']} (user {st['user']}; plex registry login)")
    if boot:
        ui.table(
            f"bootstrap manifests of {p.name} (RKE2 auto-deploy)",
            ["manifest", "addon", "sha256", "state"],
            [[b["manifest"], b["addon"], b["sha256"], b["state"]] for b in boot],
        )
