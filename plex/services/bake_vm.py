"""bake for VM roles: MicroOS images built by Packer from the same role recipes.

    recipe (suse packages, MicroOS base) -> VM digest -> cache check -> fetch base qcow2
    -> seed + throwaway key + files tarball -> packer validate -> packer build (streamed)
    -> qcow2 + zstd artifact + manifest -> Incus VM image -> aliases -> catalog

Cache, catalog and alias semantics are the container ones (plex.services.bake): a catalog entry
for the VM digest whose image Incus still holds under `<plex>/<role>@<digest12>` is a no-op;
anything else builds, and only a complete image moves the aliases. Roles build one after the
other: each build is a whole VM.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plex.backends.incus.protocol import Incus
from plex.backends.mmdebstrap import metadata_tarball
from plex.backends.packer import Packer, qcow2_of
from plex.bake.bases import Qcow2Base, vm_bases
from plex.bake.packer_template import BuildPaths, VmSpec, packer_template, vm_inputs
from plex.bake.recipe import Layer, Recipe, RenderedFile
from plex.bake.seed import build_seed
from plex.bake.vm_files import files_tarball, vm_files
from plex.errors import ArtifactError, BackendError, DownloadError
from plex.model.identity import SystemKeyGen
from plex.model.image import digest_alias, image_alias
from plex.model.plex import Plex, Role
from plex.services.bake import BakeResult, Paths, plan_recipes, reuse_cached
from plex.services.progress import unreported
from plex.store import artifacts as artifacts_mod
from plex.store import downloads
from plex.store.catalog import Entry, load_catalog, save_catalog
from plex.store.lock import plex_lock
from plex.store.state import cache_root

Report = Callable[[Role, str], None]
FetchBase = Callable[[Qcow2Base], downloads.Downloaded]
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class VmRecipe(Layer):
    """A role recipe as a VM image: a layer over the recipe whose digest covers what
    plex.bake.packer_template.vm_inputs lists (the recipe, the template, the seed, extras)."""

    recipe: Recipe
    base: Qcow2Base
    files: tuple[RenderedFile, ...]
    spec: VmSpec
    vm: dict[str, Any]  # vm_inputs(plex, recipe)

    def inputs(self) -> dict[str, Any]:
        return self.vm

    @property
    def role(self) -> Role:
        return self.recipe.role


def check_vm_bases(plex: Plex, roles: Sequence[Role], paths: Paths) -> dict[Role, Qcow2Base]:
    """Every role's base must be a qcow2 base: say so before anything is downloaded."""
    return vm_bases(plex, roles, paths.images)


def plan_vm(plex: Plex, roles: Sequence[Role], paths: Paths) -> dict[Role, VmRecipe]:
    bases = check_vm_bases(plex, roles, paths)
    recipes = plan_recipes(plex, roles, paths)
    return {
        role: VmRecipe(
            recipes[role],
            bases[role],
            vm_files(plex, recipes[role]),
            VmSpec.for_role(plex, role),
            vm_inputs(plex, recipes[role]),
        )
        for role in roles
    }


def pick_base_checksum(
    entries: Sequence[tuple[str, str]], unversioned: str, redirect_name: str | None, source: str
) -> tuple[str, str]:
    """(sha256, how it was chosen) for the unversioned appliance from its `.sha256`.

    openSUSE publishes the appliance under an unversioned name that is a link (a redirect) to
    the current snapshot, `...-ContainerHost-OpenStack-Cloud-Snapshot<date>.qcow2`, and the
    `.sha256` beside it names that versioned file, so a lookup by the unversioned name finds
    nothing. In order: an entry for the unversioned name itself; the entry for the file the
    download redirects to; the file's single entry. Anything else is refused."""
    by_name = {name: digest for digest, name in entries}
    if unversioned in by_name:
        return by_name[unversioned], f"listed as {unversioned}"
    if redirect_name and redirect_name in by_name:
        return by_name[redirect_name], f"listed as {redirect_name}, the redirect target"
    if len(entries) == 1:
        digest, name = entries[0]
        return digest, f"the single entry of {Path(source).name}, {name or '(no name)'}"
    names = ", ".join(n or "(no name)" for _, n in entries) or "no sha256 line"
    raise DownloadError(
        f"{source} has no entry for {unversioned}"
        + (f" or its redirect target {redirect_name}" if redirect_name else "")
        + f" and {len(entries)} entries ({names}): cannot tell which is the download",
        hint="pin the versioned snapshot URL in the base image definition",
    )


def fetch_base(base: Qcow2Base) -> downloads.Downloaded:
    """The MicroOS qcow2, verified against the `.sha256` published beside it (cached by digest).
    The returned note says which entry of the `.sha256` the digest came from."""
    entries = downloads.checksum_entries(downloads.get_text(base.checksum_url))
    target = downloads.location(base.url)
    redirect_name = Path(urllib.parse.urlsplit(target).path).name if target else None
    digest, how = pick_base_checksum(entries, base.filename, redirect_name, base.checksum_url)
    got = downloads.fetch(base.url, sha256=digest)
    return dataclasses.replace(got, note=how)


def throwaway_key() -> tuple[str, str]:
    """(private OpenSSH PEM, public line) of a key that lives only as long as one build."""
    key = SystemKeyGen().host_key("ed25519", "plex-build")
    return key.private, key.public


# ---------------------------------------------------------------------------------------------
# Artifacts and Incus


@dataclass(frozen=True)
class StoredVm:
    directory: Path
    qcow2: Path
    zst: Path
    manifest: Path


def artifact_dir(plex: str, role: Role, digest: str) -> Path:
    return cache_root() / "images" / plex / f"{role.value}-{digest[:12]}"


def store_vm_artifact(qcow2: Path, dest: Path, info: dict[str, Any]) -> StoredVm:
    """Move the built qcow2 into `dest`, write `<name>.qcow2.zst` and `manifest.json`.

    The manifest lists both files with their sha256 and size; it is written last, so a
    directory with a manifest is complete.
    """
    import zstandard

    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=_parent(dest)))
    try:
        disk = tmp / qcow2.name
        shutil.move(str(qcow2), disk)
        zst = tmp / f"{qcow2.name}.zst"
        with disk.open("rb") as src, zst.open("wb") as out:
            zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(src, out)
        manifest = {
            "format": MANIFEST_FORMAT,
            "kind": "vm",
            **info,
            "files": {
                p.name: {"sha256": downloads.file_sha256(p), "size": p.stat().st_size}
                for p in (disk, zst)
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoredVm(dest, dest / qcow2.name, dest / f"{qcow2.name}.zst", dest / "manifest.json")


def verify_vm_artifact(directory: Path) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest."""
    path = directory / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable manifest ({e})") from None
    for name, want in manifest.get("files", {}).items():
        f = directory / name
        if not f.exists() or downloads.file_sha256(f) != want["sha256"]:
            raise ArtifactError(
                f"{f}: missing or does not match {path}",
                hint="re-bake, or restore the artifact from where it was copied",
            )
    return manifest


def _parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


def import_vm_image(incus: Incus, qcow2: Path, description: str, properties: dict[str, str]) -> str:
    """Import a qcow2 as an Incus VM image (split: metadata tarball + rootfs.img)."""
    with tempfile.TemporaryDirectory(prefix="plex-vm-meta-") as d:
        meta = metadata_tarball(Path(d) / "metadata.tar", description, properties)
        return incus.import_image(meta, qcow2, properties, vm=True)


# ---------------------------------------------------------------------------------------------
# The bake


@dataclass
class VmBaker:
    """Bakes the VM roles of one plex: Packer builds, Incus holds the images."""

    plex: Plex
    incus: Incus
    packer: Packer
    paths: Paths
    report: Report = unreported
    fetch: FetchBase = fetch_base

    def bake(self, roles: Sequence[Role]) -> list[BakeResult]:
        with plex_lock(self.plex.name, "bake"):
            recipes = plan_vm(self.plex, roles, self.paths)
            results = []
            for role in roles:
                try:
                    results.append(self.bake_role(recipes[role]))
                except BackendError as e:
                    e.message = f"bake of {self.plex.name}/{role.value} (vm): {e.message}"
                    raise
            return results

    def bake_role(self, vr: VmRecipe) -> BakeResult:
        start = time.monotonic()
        role = vr.role
        self.report(role, f"vm recipe {vr.short}")
        hit = reuse_cached(self.incus, self.plex.name, role, vr.digest, "vm")
        if hit is not None:
            self.report(role, f"cached {vr.short}")
            return BakeResult.reused(hit, time.monotonic() - start)
        stored, base_sha = self.build(vr)
        fingerprint = self.publish(vr, stored)
        size = stored.qcow2.stat().st_size
        seconds = time.monotonic() - start
        entry = Entry(
            role=role.value,
            digest=vr.digest,
            package_digest=vr.recipe.package.digest,
            fingerprint=fingerprint,
            baked_at=time.time(),
            seconds=round(seconds, 2),
            size=size,
            virt="vm",
            inputs=self.provenance(vr, base_sha),
        )
        save_catalog(load_catalog(self.plex.name).record(entry))
        self.report(role, f"built {vr.short}")
        return BakeResult(role, vr.digest, fingerprint, False, seconds, size, False)

    def provenance(self, vr: VmRecipe, base_sha256: str) -> dict[str, Any]:
        return {
            **vr.recipe.provenance(),
            "virt": "vm",
            "vm_digest": vr.digest,
            "base": {"name": vr.base.name, "url": vr.base.url, "sha256": base_sha256},
            "vm": vr.inputs(),
        }

    def build(self, vr: VmRecipe) -> tuple[StoredVm, str]:
        role = vr.role
        root = cache_root() / "vm-build"
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{self.plex.name}-{role.value}-", dir=root))
        try:
            self.report(role, f"base {vr.base.filename}")
            base = self.fetch(vr.base)
            if base.note:
                self.report(role, f"base sha256 {base.sha256[:12]}: {base.note}")
            paths = self.write_inputs(vr, work)
            template = packer_template(
                self.plex,
                vr.recipe,
                paths,
                f"sha256:{base.sha256}",
                vr.spec,
                iso_url=str(base.path),
            )
            template_file = work / "template.json"
            template_file.write_text(json.dumps(template, indent=2) + "\n")
            self.report(role, "packer validate")
            self.packer.validate(template_file)
            self.report(role, "packer build")
            artifacts = self.packer.build(
                template_file,
                output_dir=Path(paths.output_dir),
                progress=lambda msg: self.report(role, msg),
            )
            qcow2 = qcow2_of(artifacts)
            self.report(role, "store artifact")
            stored = store_vm_artifact(
                qcow2,
                artifact_dir(self.plex.name, role, vr.digest),
                {
                    "plex": self.plex.name,
                    "role": role.value,
                    "digest": vr.digest,
                    "package_digest": vr.recipe.package.digest,
                    "base_sha256": base.sha256,
                    "base_checksum": base.note,
                    "baked_at": int(time.time()),
                },
            )
            return stored, base.sha256
        finally:
            # The throwaway key, the seed and anything Packer left go with the work directory.
            shutil.rmtree(work, ignore_errors=True)

    def write_inputs(self, vr: VmRecipe, work: Path) -> BuildPaths:
        private, public = throwaway_key()
        key = work / "id_ed25519"
        key.touch(mode=0o600)
        key.write_text(private)
        seed_dir = work / "seed"
        seed_dir.mkdir()
        seed_files = []
        for name, text in build_seed(self.plex.name, vr.role.value, public).files().items():
            (seed_dir / name).write_text(text)
            seed_files.append(str(seed_dir / name))
        files_tar = work / "plex-files.tar"
        files_tar.write_bytes(files_tarball(vr.files))
        artifacts = tuple(
            (a.name, str(artifacts_mod.local_path(self.plex, a.name)))
            for a, _ in vr.recipe.package.artifacts
        )
        return BuildPaths(
            output_dir=str(work / "output"),
            seed_files=tuple(seed_files),
            ssh_key=str(key),
            files_tar=str(files_tar),
            artifacts=artifacts,
        )

    def publish(self, vr: VmRecipe, stored: StoredVm) -> str:
        role = vr.role
        self.report(role, "import into Incus")
        props = {
            "os": "opensuse",
            "release": "microos",
            "description": f"plex {self.plex.name}/{role.value} {vr.short} (vm)",
            "plex.plex": self.plex.name,
            "plex.role": role.value,
            "plex.virt": "vm",
            "plex.digest": vr.digest,
            "plex.package_digest": vr.recipe.package.digest,
            "plex.baked_at": str(int(time.time())),
        }
        fp = import_vm_image(self.incus, stored.qcow2, props["description"], props)
        # Aliases move only once the image is complete: the pinned one, then the moving one.
        self.incus.set_alias(digest_alias(self.plex.name, role, vr.digest), fp)
        self.incus.set_alias(image_alias(self.plex.name, role), fp)
        return fp
