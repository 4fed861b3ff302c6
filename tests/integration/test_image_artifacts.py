"""Image artifacts against real Incus: export, re-import elsewhere, refusal, list and prune.

Images here are tiny (a few files, made in well under a second): full bakes take minutes and are
tested elsewhere. Generation 1 is a split image (as plex imports package layers), generation 2 a
published, uncompressed unified image (as the bake pipeline publishes plex layers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from plex.__main__ import main
from plex.backends.incus.client import PylxdIncus, throwaway_project
from plex.backends.mmdebstrap import metadata_tarball
from plex.errors import ArtifactError
from plex.model import owner
from plex.model.image import digest_alias, image_alias, package_alias
from plex.model.plex import IncusConfig
from plex.services import images as art
from plex.store.catalog import Entry, load_catalog, save_catalog

from .conftest import NETWORK, POOL, ROOT

pytestmark = pytest.mark.incus

PLEX = "artplex"  # not demo: other modules of the session bake demo in the same project
ROLE = "agent"
P_OLD = hashlib.sha256(b"artplex package layer old").hexdigest()
P_NEW = hashlib.sha256(b"artplex package layer new").hexdigest()


def digest(n: int) -> str:
    return hashlib.sha256(f"artplex generation {n}".encode()).hexdigest()


def rootfs_tar(path: Path, n: int) -> Path:
    files = {
        "etc/hostname": b"tiny\n",
        "etc/generation": f"{n}\n".encode(),
        "var/lib/dpkg/status": b"Package: tinypkg\nStatus: install ok installed\nVersion: 1.0-1\n",
    }
    with tarfile.open(path, "w") as tar:
        for d in ("etc", "root", "tmp", "var", "var/lib", "var/lib/dpkg"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass(frozen=True)
class Gen:
    n: int
    digest: str
    fingerprint: str
    package_digest: str

    def entry(self) -> Entry:
        return Entry(
            role=ROLE,
            digest=self.digest,
            package_digest=self.package_digest,
            fingerprint=self.fingerprint,
            baked_at=float(self.n),
            size=1,
            inputs={"generation": self.n},
        )


def make_gen(incus: PylxdIncus, d: Path, n: int, pkg: str, publish: bool = False) -> Gen:
    props = {
        "plex.plex": PLEX,
        "plex.role": ROLE,
        "plex.digest": digest(n),
        "plex.package_digest": pkg,
        "plex.baked_at": str(n),
    }
    # Published images inherit their source's properties, as baked ones do from their package
    # layer (`plex.layer: package`): prune must still tell them from layers.
    base = {"plex.layer": "package", "plex.package_digest": pkg} if publish else props
    meta = metadata_tarball(d / f"meta{n}.tar", f"{PLEX}/{ROLE} generation {n}", base)
    fp = incus.import_image(meta, rootfs_tar(d / f"rootfs{n}.tar", n), base)
    if publish:
        # What the bake pipeline does: publish a (never started) instance, uncompressed.
        name = f"{PLEX}-publish-{n}"
        incus.create_instance(
            name,
            image=fp,
            config={},
            profiles=[],
            devices={"root": {"type": "disk", "path": "/", "pool": POOL}},
        )
        try:
            published = incus.publish(name, properties=props, compression="none")
        finally:
            incus.delete_instance(name)
        incus.delete_image(fp)
        fp = published
    incus.set_alias(digest_alias(PLEX, ROLE, digest(n)), fp)
    gen = Gen(n, digest(n), fp, pkg)
    save_catalog(load_catalog(PLEX).record(gen.entry()))
    return gen


@pytest.fixture(scope="module")
def gens(
    incus: PylxdIncus, state_dirs: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Gen]:
    d = tmp_path_factory.mktemp("artgens")
    g1 = make_gen(incus, d, 1000, P_OLD)
    g2 = make_gen(incus, d, 2000, P_NEW, publish=True)
    incus.set_alias(image_alias(PLEX, ROLE), g2.fingerprint)
    return {1: g1, 2: g2}


@pytest.fixture(scope="module")
def plex_file(incus_cfg: IncusConfig, tmp_path_factory: pytest.TempPathFactory) -> str:
    data = yaml.safe_load((ROOT / "plexes" / "demo.yaml").read_text())
    data["name"] = PLEX
    data["incus"].update(project=incus_cfg.project, pool=POOL, network=NETWORK)
    path = tmp_path_factory.mktemp("artplex") / f"{PLEX}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str, str]]]:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield run
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def members(path: Path) -> dict[str, bytes]:
    return dict(art.iter_artifact_members(path))


# -- export ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(
    gens: dict[int, Gen], incus: PylxdIncus, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, art.Manifest]:
    dest = tmp_path_factory.mktemp("out")
    m = art.export_image(incus, PLEX, ROLE, dest)  # the newest: generation 2
    return dest / m.filename, m


def test_export_writes_a_unified_zstd_image_and_manifest(
    exported: tuple[Path, art.Manifest], gens: dict[int, Gen]
) -> None:
    path, m = exported
    assert path.name == f"{PLEX}-{ROLE}-{gens[2].digest[:12]}.tar.zst"
    # Only the artifact and its manifest: no temporary export, no .part file.
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, f"{PLEX}-{ROLE}-{gens[2].digest[:12]}.json"]
    )
    assert path.read_bytes()[:4] == art.ZSTD_MAGIC
    assert art.load_manifest(art.manifest_path_for(path)) == m
    assert (m.digest, m.fingerprint, m.package_digest) == (
        gens[2].digest,
        gens[2].fingerprint,
        P_NEW,
    )
    assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m.size == path.stat().st_size and m.uncompressed_size > m.size
    assert m.packages == ("tinypkg 1.0-1",) and m.inputs == {"generation": 2000}
    files = members(path)
    assert files["rootfs/etc/generation"] == b"2000\n"
    assert "templates/hostname.tpl" in files
    meta = yaml.safe_load(files["metadata.yaml"])
    assert meta["properties"]["plex.digest"] == gens[2].digest


def test_export_of_a_split_image_is_unified(
    gens: dict[int, Gen],
    incus: PylxdIncus,
    tmp_path: Path,
    cli: Callable[..., tuple[int, str, str]],
    plex_file: str,
) -> None:
    code, out, err = cli(
        "image",
        "export",
        plex_file,
        ROLE,
        "--digest",
        gens[1].digest[:8],
        "--dest",
        str(tmp_path),
        "-o",
        "json",
    )
    assert code == 0, err
    path = Path(json.loads(out)["artifact"])
    names = [n for n, _ in art.iter_artifact_members(path)]
    assert names[0] == "metadata.yaml" and "rootfs/etc/generation" in names
    assert members(path)["rootfs/etc/generation"] == b"1000\n"
    # A split image keeps its properties in the Incus database: the artifact carries them.
    metadata = art.read_metadata(path)
    assert metadata is not None and metadata["properties"]["plex.digest"] == gens[1].digest
    assert art.load_manifest(art.manifest_path_for(path)).packages == ("tinypkg 1.0-1",)


def test_export_of_an_unknown_digest_is_a_usage_error(
    gens: dict[int, Gen], plex_file: str, cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    code, _, err = cli(
        "image", "export", plex_file, ROLE, "--digest", "ffffffff", "--dest", str(tmp_path)
    )
    assert code == 2 and "no artplex/agent image with digest ffffffff" in err
    assert list(tmp_path.iterdir()) == []


# -- import ------------------------------------------------------------------------------------


def test_import_into_another_project_round_trips(
    exported: tuple[Path, art.Manifest],
    incus_cfg: IncusConfig,
    incus: PylxdIncus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, m = exported
    # Another machine: its own project and its own state (catalog).
    monkeypatch.setenv("PLEX_STATE_DIR", str(tmp_path / "state-b"))
    with throwaway_project(incus_cfg, f"{incus_cfg.project}-b") as other:
        assert art.import_image(other, path) == m
        pinned = other.image_by_alias(digest_alias(PLEX, ROLE, m.digest))
        assert pinned is not None and pinned.fingerprint == m.sha256
        assert pinned.properties["plex.digest"] == m.digest
        assert other.image_by_alias(image_alias(PLEX, ROLE)) is None  # deploy's alias untouched
        entry = load_catalog(PLEX).find(ROLE, m.digest)
        assert entry is not None and entry.fingerprint == pinned.fingerprint
        assert entry.baked_at == 2000.0 and entry.inputs == {"generation": 2000}

        # Twice: nothing new.
        art.import_image(other, path)
        assert [i.fingerprint for i in other.images()] == [pinned.fingerprint]

        # The same content comes back out.
        again = art.export_image(other, PLEX, ROLE, tmp_path / "again")
        rootfs = {k: v for k, v in members(path).items() if k.startswith("rootfs/")}
        assert {
            k: v
            for k, v in members(tmp_path / "again" / again.filename).items()
            if k.startswith("rootfs/")
        } == rootfs
        assert again.packages == m.packages and again.digest == m.digest

        # A corrupted copy is refused and imports nothing.
        bad_dir = tmp_path / "bad"
        bad_dir.mkdir()
        bad = bad_dir / path.name
        shutil.copy(art.manifest_path_for(path), art.manifest_path_for(bad))
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x55
        bad.write_bytes(bytes(raw))
        other.delete_image(pinned.fingerprint)
        with pytest.raises(ArtifactError, match=rf"{bad.name}: sha256"):
            art.import_image(other, bad)
        assert other.images() == []


def test_import_where_the_baked_image_is_is_a_no_op(
    exported: tuple[Path, art.Manifest], incus: PylxdIncus, gens: dict[int, Gen]
) -> None:
    path, m = exported
    before = {i.fingerprint for i in incus.images()}
    art.import_image(incus, path)
    assert {i.fingerprint for i in incus.images()} == before
    assert load_catalog(PLEX).find(ROLE, m.digest) == gens[2].entry()


# -- list and prune ----------------------------------------------------------------------------


def test_list_and_prune_keep_what_is_used(
    gens: dict[int, Gen],
    incus: PylxdIncus,
    tmp_path: Path,
    plex_file: str,
    cli: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PLEX_CACHE_DIR", str(cache))
    (cache / "layers").mkdir(parents=True)
    for pkg in (P_OLD, P_NEW):
        (cache / "layers" / f"{pkg}.tar").write_bytes(b"rootfs")
        meta = metadata_tarball(
            tmp_path / f"layer-{pkg[:6]}.tar",
            "layer",
            {"plex.layer": "package", "plex.package_digest": pkg},
        )
        fp = incus.import_image(
            meta,
            rootfs_tar(tmp_path / f"lr-{pkg[:6]}.tar", 0),
            {"plex.layer": "package", "plex.package_digest": pkg},
        )
        incus.set_alias(package_alias(pkg), fp)
    g_stable = make_gen(incus, tmp_path, 50, P_NEW)
    g_old = make_gen(incus, tmp_path, 500, P_OLD, publish=True)
    g_used = make_gen(incus, tmp_path, 100, P_NEW)
    g_newest = make_gen(incus, tmp_path, 3000, P_NEW)
    catalog = load_catalog(PLEX).promote("stable", ROLE, g_stable.digest)
    lost = Gen(1500, digest(1500), "0" * 64, P_OLD)  # the catalog knows it, Incus lost it
    save_catalog(catalog.record(lost.entry()))
    node = f"{PLEX}-agent1"
    incus.create_instance(
        node,
        image=g_used.fingerprint,
        profiles=[],
        devices={"root": {"type": "disk", "path": "/", "pool": POOL}},
        config={owner.PLEX: PLEX, owner.ROLE: ROLE, owner.IMAGE: g_used.digest},
    )
    try:
        code, out, err = cli("image", "list", plex_file, "-o", "json")
        assert code == 0, err
        rows = {r["digest"]: r for r in json.loads(out)["images"]}
        assert [r["digest"] for r in json.loads(out)["images"]] == [
            g_newest.digest,
            gens[2].digest,
            lost.digest,
            gens[1].digest,
            g_old.digest,
            g_used.digest,
            g_stable.digest,
        ]
        assert rows[gens[2].digest]["current"] and not rows[g_newest.digest]["current"]
        assert rows[g_used.digest]["in_use"] == [node]
        assert rows[g_stable.digest]["channels"] == ["stable"]
        assert rows[lost.digest]["missing"] and not rows[gens[1].digest]["missing"]
        assert digest_alias(PLEX, ROLE, gens[2].digest) in rows[gens[2].digest]["aliases"]
        code, out, _ = cli("image", "list", plex_file)
        assert code == 0 and "missing in Incus" in out

        code, out, err = cli("image", "prune", plex_file, "--keep", "1", "--dry-run", "-o", "json")
        assert code == 0, err
        plan = json.loads(out)
        assert {e["digest"] for e in plan["remove"]} == {gens[1].digest, lost.digest, g_old.digest}
        assert [la["package_digest"] for la in plan["layers"]] == [P_OLD]
        assert load_catalog(PLEX).find(ROLE, gens[1].digest) is not None  # dry run: kept
        assert incus.image_by_alias(package_alias(P_OLD)) is not None

        code, out, err = cli("image", "prune", plex_file, "--keep", "1", "-o", "json")
        assert code == 0, err
        kept = {k["digest"]: k["reasons"] for k in json.loads(out)["kept"]}
        assert kept == {
            g_newest.digest: ["newest"],
            gens[2].digest: ["current"],
            g_used.digest: [f"node {node}"],
            g_stable.digest: ["channel stable"],
        }
        assert {e.digest for e in load_catalog(PLEX).entries} == set(kept)
        fps = {i.fingerprint for i in incus.images()}
        assert gens[1].fingerprint not in fps and g_old.fingerprint not in fps
        assert {g.fingerprint for g in (g_newest, gens[2], g_used, g_stable)} <= fps
        assert incus.image_by_alias(digest_alias(PLEX, ROLE, gens[1].digest)) is None
        assert incus.image_by_alias(package_alias(P_OLD)) is None
        assert incus.image_by_alias(package_alias(P_NEW)) is not None
        assert sorted(os.listdir(cache / "layers")) == [f"{P_NEW}.tar"]

        # Pruning again changes nothing.
        code, out, _ = cli("image", "prune", plex_file, "--keep", "1", "-o", "json")
        assert code == 0 and json.loads(out)["remove"] == []
    finally:
        incus.delete_instance(node)
