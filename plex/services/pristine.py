"""Pristine snapshots belong to the image generation they were taken of, and go with it.

A pristine set is one stamp across every node of a plex: on each node the snapshot
`plex-pristine-<image12>-<stamp>`, where <image12> is the image that node ran when the set was
taken. A set can be restored only while it is whole, every node holding it for the image it
runs now. `retire` is the one hook that deletes the sets that cannot be restored any more;
it runs when a generation is retired:
- a deploy that changed nodes (a new generation rolled out, a node replaced or added): the
  replaced instances took their snapshots with them, and the survivors' halves of those sets
  would restore a cluster that no longer exists;
- `plex image prune`: no snapshot may outlive the image it belongs to;
- `plex destroy`: every set goes (the instances would take them anyway; the hook says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from plex.backends.incus.protocol import Incus
from plex.deploy.actions import Plan, Verb
from plex.model import owner
from plex.model.observed import Observed, owned

PREFIX = "plex-pristine-"


def snapshot_name(image_digest: str, stamp: str) -> str:
    """`plex-pristine-<image12>-<stamp>`: the image it belongs to, and when it was taken."""
    return f"{PREFIX}{image_digest[:12]}-{stamp}"


def stamp_of(name: str) -> str:
    return name.rsplit("-", 1)[-1]


def whole_sets(images: Mapping[str, str], held: Mapping[str, Sequence[str]]) -> set[str]:
    """The stamps every node holds a pristine snapshot of, for the image it runs.
    `images`: node -> image digest it runs; `held`: node -> its snapshot names."""
    common: set[str] | None = None
    for node, image in images.items():
        mine = {stamp_of(s) for s in held.get(node, ()) if s.startswith(f"{PREFIX}{image[:12]}-")}
        common = mine if common is None else common & mine
    return common or set()


def stale(
    images: Mapping[str, str], held: Mapping[str, Sequence[str]], everything: bool = False
) -> list[tuple[str, str]]:
    """(node, snapshot) pairs to delete: every pristine snapshot not in a whole set (or all of
    them, `everything`). Snapshots that are not plex's own are never listed."""
    keep = set() if everything else whole_sets(images, held)
    return [
        (node, s)
        for node in sorted(held)
        for s in held[node]
        if s.startswith(PREFIX)
        and not (
            node in images and s == snapshot_name(images[node], stamp_of(s)) and stamp_of(s) in keep
        )
    ]


def nodes_and_images(observed: Observed) -> dict[str, str]:
    """The plex's deployed instances (no bake build) and the image each runs."""
    return {
        name: inst.image or ""
        for name, inst in observed.instances.items()
        if owned(inst.config, observed.plex) and inst.build is None
    }


def survivors(plan: Plan) -> dict[str, str]:
    """After `plan` is applied: the nodes it kept whose pristine sets it retired, with their
    images. A plan that creates, replaces or deletes any node makes another plex (a set of
    the old one would bring back nodes, members and images that are gone); starting a stopped
    node retires nothing."""
    if not any(a.verb in (Verb.CREATE, Verb.REPLACE, Verb.DELETE) for a in plan.actions):
        return {}
    return {
        a.node: a.spec.config.get(owner.IMAGE, "")
        for a in plan.actions
        if a.verb in (Verb.KEEP, Verb.START) and a.spec is not None
    }


def retire(
    incus: Incus, images: Mapping[str, str], everything: bool = False
) -> list[tuple[str, str]]:
    """Delete the pristine snapshots of retired generations on the nodes `images` names (node
    -> the image it runs): those in no whole set, or all of them (`everything`). Returns the
    (node, snapshot) pairs deleted."""
    held = {name: incus.snapshots(name) for name in images}
    gone = stale(images, held, everything)
    for node, snap in gone:
        incus.delete_snapshot(node, snap)
    return gone
