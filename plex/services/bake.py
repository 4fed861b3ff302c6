"""bake(): per role, a flat list of named steps; roles run in parallel.

    resolve artifacts -> recipe -> cache check -> package layer -> plex layer -> publish -> record

The package layer (Debian: mmdebstrap on the host) is imported once per digest and shared by
every role and plex that needs the same packages. The plex layer is built in a transient
instance that is always removed (on error, Ctrl-C and SIGTERM; a SIGKILLed bake's leftover is
removed by the next bake). A failed bake publishes nothing and leaves aliases where they were.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.backends.mmdebstrap import build_rootfs, metadata_tarball
from plex.bake.context import template_context
from plex.bake.recipe import (
    PackageLayer,
    Recipe,
    load_base_image,
    load_role_recipe,
    make_recipe,
)
from plex.bake.render import Renderer
from plex.errors import BackendError, Interrupted, PlexError
from plex.model import owner
from plex.model.image import digest_alias, image_alias, package_alias
from plex.model.plex import Plex, Role
from plex.model.record import record_json
from plex.services.progress import unreported
from plex.services.remote_layer import build_in_instance
from plex.store import artifacts as artifacts_mod
from plex.store import channels as channels_mod
from plex.store.catalog import Entry, load_catalog, save_catalog
from plex.store.channels import Channel
from plex.store.identity import require_identity
from plex.store.lock import owner_id, plex_lock, process_alive
from plex.store.state import cache_root

Report = Callable[[Role, str], None]  # progress: (role, what is happening)
COMPRESSION = "none"  # see publish(): artifacts are compressed on export, multi-threaded


@dataclass(frozen=True)
class Paths:
    bake: Path  # bake/ recipes and templates
    images: Path  # images/ base definitions

    @classmethod
    def under(cls, root: Path) -> Paths:
        return cls(root / "bake", root / "images")


@dataclass(frozen=True)
class BakeResult:
    role: Role
    digest: str
    fingerprint: str
    cached: bool
    seconds: float
    size: int
    package_cached: bool
    package_digest: str = ""  # the package layer the image was built on
    channel: str = ""  # stable: that layer is the stable one of its lineage; else latest

    def to_json(self) -> dict[str, Any]:
        return record_json(self)

    @classmethod
    def reused(cls, hit: Entry, seconds: float, layer: tuple[str, str] = ("", "")) -> BakeResult:
        """A no-op bake: the image baked before from the same recipe."""
        return cls(
            Role(hit.role), hit.digest, hit.fingerprint, True, seconds, hit.size, True, *layer
        )


def reuse_cached(incus: Incus, plex: str, role: Role, digest: str, virt: str) -> Entry | None:
    """The catalog entry of an image of this kind (`virt`) baked before from `digest` that Incus
    still holds under its pinned alias; the moving alias then points at it. None: bake it."""
    entry = load_catalog(plex).find(role, digest)
    if entry is None or entry.virt != virt:
        return None
    img = incus.image_by_alias(digest_alias(plex, role, digest))
    if img is None or img.fingerprint != entry.fingerprint:
        return None
    incus.set_alias(image_alias(plex, role), entry.fingerprint)
    return entry


def plan_recipes(
    plex: Plex,
    roles: Sequence[Role],
    paths: Paths,
    channel: Channel | str = Channel.LATEST,
    chans: channels_mod.Channels | None = None,
) -> dict[Role, Recipe]:
    """Compute every role's recipe (downloads artifacts if needed; no Incus).

    With `channel` stable, a role whose package-layer lineage has a stable record builds its
    plex layer on that layer instead of the one its recipe describes now (plex.store.channels).
    """
    # Images hold only public identity data: a locked identity bakes.
    identity = require_identity(plex, secrets=False)
    renderer = Renderer(paths.bake / "templates")
    chans = chans if chans is not None else channels_mod.load_channels()
    out: dict[Role, Recipe] = {}
    for role in roles:
        role_recipe = load_role_recipe(paths.bake, role, plex.registry.engine)
        base = load_base_image(paths.images, plex.os_for(role).base)
        resolved = {
            a.name: artifacts_mod.resolve(plex, a.name)
            for a in role_recipe.artifacts
            if a.wanted(plex)
        }
        ctx = template_context(plex, identity, role)
        recipe = make_recipe(plex, role, role_recipe, base, renderer, ctx, resolved)
        pinned = channels_mod.pinned_layer(recipe, channel, chans)
        if pinned is not None:
            recipe = channels_mod.rebase(recipe, pinned, role_recipe, renderer, ctx)
        out[role] = recipe
    return out


class Baker:
    """Bakes the roles of one plex against one Incus project."""

    def __init__(
        self,
        plex: Plex,
        incus: Incus,
        paths: Paths,
        report: Report | None = None,
        compression: str = COMPRESSION,
        channel: Channel | str = Channel.STABLE,
    ) -> None:
        self.plex = plex
        self.incus = incus
        self.paths = paths
        self.channel = Channel(channel)
        self.report: Report = report or unreported
        self.compression = compression
        self.cancel = threading.Event()
        self._pkg_locks: dict[str, threading.Lock] = {}
        self._pkg_guard = threading.Lock()
        self._catalog_guard = threading.Lock()
        self.bake_id = owner_id()
        self._layers: dict[Role, tuple[str, str]] = {}  # role -> (package digest, channel)

    # -- the whole bake ------------------------------------------------------------------------

    def bake(self, roles: Sequence[Role], parallel: int = 4) -> list[BakeResult]:
        with plex_lock(self.plex.name, "bake"):
            self.remove_leftovers()
            chans = channels_mod.load_channels()
            recipes = plan_recipes(self.plex, roles, self.paths, self.channel, chans)
            self._layers = {
                r: (recipes[r].package.digest, channels_mod.channel_of(recipes[r], chans).value)
                for r in roles
            }
            results: dict[Role, BakeResult] = {}
            errors: list[tuple[Role, BaseException]] = []
            with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
                futures: dict[Future[BakeResult], Role] = {
                    pool.submit(self.bake_role, recipes[r]): r for r in roles
                }
                try:
                    for fut, role in futures.items():
                        try:
                            results[role] = fut.result()
                        except Interrupted as e:
                            # Ctrl-C/SIGTERM (raised here, in the main thread, while waiting):
                            # stop every role at its next step.
                            self.cancel.set()
                            errors.append((role, e))
                        except PlexError as e:
                            # Roles are independent: the others finish and publish; only the
                            # failed role publishes nothing.
                            errors.append((role, e))
                finally:
                    # Ctrl-C/SIGTERM land here in the main thread: tell workers to stop at their
                    # next step; leaving the pool waits for their cleanup (no leaked instance).
                    self.cancel.set()
            if errors:
                # The first real failure, not the cancellations it caused in other roles.
                errors.sort(key=lambda re: isinstance(re[1], Interrupted))
                role, err = errors[0]
                if isinstance(err, PlexError):
                    err.message = f"bake of {self.plex.name}/{role.value}: {err.message}"
                raise err
            return [results[r] for r in roles]

    def remove_leftovers(self) -> list[str]:
        """Delete build instances of this plex left by a killed bake (their process is gone)."""
        removed = []
        for inst in self.incus.observe_builds(self.plex.name):
            if not process_alive(inst.build or ""):
                self.incus.delete_instance(inst.name)
                removed.append(inst.name)
        return removed

    # -- one role ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.cancel.is_set():
            raise Interrupted("bake cancelled")

    def bake_role(self, recipe: Recipe) -> BakeResult:
        start = time.monotonic()
        role = recipe.role
        layer = self._layers.get(role, (recipe.package.digest, ""))
        self.report(role, f"recipe {recipe.short}")
        hit = reuse_cached(self.incus, self.plex.name, role, recipe.digest, "container")
        if hit is not None:
            self.report(role, f"cached {recipe.short}")
            return BakeResult.reused(hit, time.monotonic() - start, layer)
        self._check()
        pkg_fp, pkg_cached = self.package_layer(recipe)
        self._check()
        fingerprint = self.plex_layer(recipe, pkg_fp)
        info = next((i for i in self.incus.images() if i.fingerprint == fingerprint), None)
        size = info.size if info else 0
        seconds = time.monotonic() - start
        entry = Entry(
            role=role.value,
            digest=recipe.digest,
            package_digest=recipe.package.digest,
            fingerprint=fingerprint,
            baked_at=time.time(),
            seconds=round(seconds, 2),
            size=size,
            inputs=recipe.provenance(),
        )
        with self._catalog_guard:
            save_catalog(load_catalog(self.plex.name).record(entry))
        self.report(role, f"built {recipe.short}")
        return BakeResult(
            role, recipe.digest, fingerprint, False, seconds, size, pkg_cached, *layer
        )

    # -- package layer -------------------------------------------------------------------------

    def package_layer(self, recipe: Recipe) -> tuple[str, bool]:
        """The package layer image's fingerprint, built or imported once per digest."""
        digest = recipe.package.digest
        with self._pkg_guard:
            lock = self._pkg_locks.setdefault(digest, threading.Lock())
        # Roles sharing a package layer (server and agent) wait for one build.
        with lock:
            alias = package_alias(digest)
            img = self.incus.image_by_alias(alias)
            if img is not None:
                return img.fingerprint, True
            self.report(recipe.role, f"package layer {digest[:12]}")
            if recipe.package.base.kind == "incus-remote":
                paths = {
                    a.name: artifacts_mod.local_path(self.plex, a.name)
                    for a, _ in recipe.package.artifacts
                }
                fp = build_in_instance(
                    self.incus,
                    self.plex,
                    recipe.package,
                    paths,
                    self.bake_id,
                    report=lambda m: self.report(recipe.role, m),
                    check=self._check,
                )
                return fp, False
            if recipe.package.base.kind != "mmdebstrap":
                raise BackendError(
                    f"base '{recipe.package.base.name}' ({recipe.package.base.kind}) is not a "
                    "container base",
                    hint="container bases are mmdebstrap or incus-remote; qcow2 bases bake "
                    "with --virt vm",
                )
            rootfs = self._rootfs(recipe.package, recipe.role)
            self._check()
            meta = metadata_tarball(
                rootfs.with_suffix(".meta.tar"),
                f"plex package layer {digest[:12]} ({recipe.package.base.name})",
                {"plex.layer": "package", "plex.package_digest": digest},
            )
            self.report(recipe.role, "import package layer")
            fp = self.incus.import_image(
                meta, rootfs, {"plex.layer": "package", "plex.package_digest": digest}
            )
            self.incus.set_alias(alias, fp, "plex package layer")
            return fp, False

    def _rootfs(self, layer: PackageLayer, role: Role) -> Path:
        out = cache_root() / "layers" / f"{layer.digest}.tar"
        if out.exists():
            return out
        paths = {a.name: artifacts_mod.local_path(self.plex, a.name) for a, _ in layer.artifacts}
        self.report(role, f"mmdebstrap {len(layer.packages)} packages")
        return build_rootfs(layer, paths, out, cache_root() / "apt-archives")

    # -- plex layer ----------------------------------------------------------------------------

    def plex_layer(self, recipe: Recipe, package_fp: str) -> str:
        role = recipe.role
        name = f"plex-build-{self.plex.name}-{role.value}-{uuid.uuid4().hex[:6]}"
        published: str | None = None
        try:
            self.report(role, "launch build instance")
            self.incus.create_instance(
                name,
                image=package_fp,
                config={
                    owner.PLEX: self.plex.name,
                    owner.BUILD: self.bake_id,
                    owner.ROLE: role.value,
                },
                # An unattached veth: eth0 exists (keepalived -t checks the interface) but the
                # build instance has no network and never appears on the plex's bridge.
                devices={
                    "root": {"type": "disk", "path": "/", "pool": self.plex.incus.pool},
                    "eth0": {"type": "nic", "nictype": "p2p", "name": self.plex.network.interface},
                },
                profiles=[],
            )
            self.incus.start(name)
            self._check()
            self.report(role, f"files ({len(recipe.layer.files)})")
            for f in recipe.layer.files:
                self._exec(name, ["mkdir", "-p", str(Path(f.path).parent)])
                self.incus.push_file(name, f.path, f.content, mode=f.mode)
                # Incus applies the mode header, but be sure: a 0600 config must not be 0644.
                self._exec(name, ["chmod", f"{f.mode:o}", f.path])
            self._check()
            if recipe.layer.services:
                self.report(role, "enable services")
                # Offline (--root): no race with systemd still booting in the build instance.
                self._exec(name, ["systemctl", "--root=/", "enable", *recipe.layer.services])
            for v in recipe.layer.validate:
                self.report(role, "validate")
                self._exec(name, ["/bin/sh", "-ec", v], what="validation")
            for cmd in recipe.layer.commands:
                self._exec(name, ["/bin/sh", "-ec", cmd])
            self._check()
            self.report(role, "publish")
            self.incus.stop(name, force=True)
            props = {
                "os": recipe.package.base.family,
                "description": f"plex {self.plex.name}/{role.value} {recipe.short}",
                # Published images inherit the package layer's properties: say what this is.
                "plex.layer": "role",
                "plex.plex": self.plex.name,
                "plex.role": role.value,
                "plex.digest": recipe.digest,
                "plex.package_digest": recipe.package.digest,
                "plex.baked_at": str(int(time.time())),
                "plex.inputs": json.dumps(recipe.provenance()["layer"], sort_keys=True),
            }
            published = self.incus.publish(name, properties=props, compression=self.compression)
            self._check()
            # Aliases move only once the image is complete: the pinned one, then the moving one.
            self.incus.set_alias(digest_alias(self.plex.name, role, recipe.digest), published)
            self.incus.set_alias(image_alias(self.plex.name, role), published)
            return published
        except BaseException:
            # Publish nothing on failure; the previous image and aliases stay as they were.
            if published is not None:
                self.incus.delete_image(published)
            raise
        finally:
            self.incus.delete_instance(name)

    def _exec(self, name: str, argv: list[str], what: str = "command") -> None:
        res = self.incus.exec(name, argv)
        if res.returncode != 0:
            raise BackendError(
                f"{what} failed in build instance: {shlex.join(argv)} "
                f"(exit {res.returncode}): {(res.output.splitlines() or ['no output'])[-1]}"
            )
