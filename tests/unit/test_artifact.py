"""Image artifacts without a daemon: packing, manifests, verification, import refusal, prune.

Incus is replaced by a small recording fake of the `Incus` protocol (only the image calls).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
import zstandard

from plex.errors import ArtifactError
from plex.model import owner
from plex.model.observed import ObservedInstance
from plex.services import images as art
from plex.store.catalog import Catalog, Entry, load_catalog, save_catalog
from tests.fixtures.fake_incus import FakeIncus

DIGEST = "d1" * 32
PKG = "p1" * 32
STATUS = b"""Package: bash
Status: install ok installed
Version: 5.2.15-2+b7
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0

Package: zstd
Status: install ok installed
Architecture: amd64
Version: 1.5.4+dfsg2-5
"""


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes | None = None,
    *,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = link
    info.mtime = 1_700_000_000
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _metadata(digest: str = DIGEST, role: str = "agent") -> bytes:
    return yaml.safe_dump(
        {
            "architecture": "x86_64",
            "creation_date": 1,
            "properties": {"plex.digest": digest, "plex.role": role},
        }
    ).encode()


def unified_tar(path: Path, digest: str = DIGEST, big: int = 0) -> Path:
    with tarfile.open(path, "w") as tar:
        _add(tar, "metadata.yaml", _metadata(digest))
        _add(tar, "rootfs", kind=tarfile.DIRTYPE)
        _add(tar, "rootfs/etc/hostname", b"tiny\n")
        _add(tar, "rootfs/var/lib/dpkg/status", STATUS)
        if big:
            _add(tar, "rootfs/big.bin", b"\0" * big)
        _add(tar, "templates/hostname.tpl", b"{{ instance.name }}\n")
    return path


def make_artifact(tmp: Path, digest: str = DIGEST) -> tuple[Path, art.Manifest]:
    src = unified_tar(tmp / "src.tar", digest)
    out = tmp / art.artifact_name("lab", "agent", digest)
    packed = art.pack_unified(src, out)
    m = art.Manifest(
        plex="lab",
        role="agent",
        digest=digest,
        package_digest=PKG,
        sha256=packed.sha256,
        size=packed.size,
        fingerprint="f" * 64,
        packages=packed.packages,
        inputs={"layer": {"x": 1}},
        exported_at=2.0,
        baked_at=1.0,
        uncompressed_size=packed.uncompressed_size,
    )
    art.write_manifest(m, art.manifest_path_for(out))
    return out, m


# -- packing -----------------------------------------------------------------------------------


def test_pack_unified_copies_the_tar_exactly_and_lists_packages(tmp_path: Path) -> None:
    src = unified_tar(tmp_path / "src.tar")
    out = tmp_path / "a.tar.zst"
    seen: list[tuple[int, int]] = []
    packed = art.pack_unified(src, out, progress=lambda d, t: seen.append((d, t)))
    raw = out.read_bytes()
    assert raw[:4] == art.ZSTD_MAGIC
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read() == src.read_bytes()
    assert packed.sha256 == hashlib.sha256(raw).hexdigest() and packed.size == len(raw)
    assert packed.uncompressed_size == src.stat().st_size
    assert packed.packages == ("bash 5.2.15-2+b7", "zstd 1.5.4+dfsg2-5")
    assert seen and seen[-1] == (src.stat().st_size, src.stat().st_size)
    assert {p.name for p in tmp_path.iterdir()} == {"src.tar", "a.tar.zst"}  # no leftovers


def test_pack_of_a_non_tarball_leaves_no_file(tmp_path: Path) -> None:
    src = tmp_path / "junk.tar"
    src.write_bytes(b"this is not a tarball at all" * 100)
    out = tmp_path / "a.tar.zst"
    with pytest.raises(ArtifactError, match=r"junk\.tar: not a readable image tarball"):
        art.pack_unified(src, out)
    assert {p.name for p in tmp_path.iterdir()} == {"junk.tar"}  # no .part, no artifact


def test_pack_split_makes_one_unified_tarball(tmp_path: Path) -> None:
    meta = tmp_path / "meta-x.tar"
    with tarfile.open(meta, "w") as tar:
        _add(tar, "metadata.yaml", yaml.safe_dump({"properties": {"description": "d"}}).encode())
        _add(tar, "templates/hostname.tpl", b"{{ instance.name }}\n")
    rootfs = tmp_path / "x.tar"
    with tarfile.open(rootfs, "w") as tar:  # mmdebstrap style: ./-prefixed, with a hard link
        _add(tar, "./", kind=tarfile.DIRTYPE)
        _add(tar, "./usr/bin/a", b"binary")
        _add(tar, "./usr/bin/b", kind=tarfile.LNKTYPE, link="./usr/bin/a")
        _add(tar, "./bin", kind=tarfile.SYMTYPE, link="usr/bin")
        _add(tar, "./var/lib/dpkg/status", STATUS)
    out = tmp_path / "u.tar.zst"
    packed = art.pack_split(meta, rootfs, out, {"plex.digest": DIGEST})
    assert packed.packages == ("bash 5.2.15-2+b7", "zstd 1.5.4+dfsg2-5")
    with (
        zstandard.ZstdDecompressor().stream_reader(out.open("rb")) as r,
        tarfile.open(fileobj=r, mode="r|") as tar,
    ):
        members = {}
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            members[m.name] = (m, f.read() if f else b"")
    names = list(members)
    assert names[:2] == ["metadata.yaml", "templates/hostname.tpl"]
    assert set(names[2:]) == {
        "rootfs",
        "rootfs/usr/bin/a",
        "rootfs/usr/bin/b",
        "rootfs/bin",
        "rootfs/var/lib/dpkg/status",
    }
    props = yaml.safe_load(members["metadata.yaml"][1])["properties"]
    assert props == {"description": "d", "plex.digest": DIGEST}
    assert members["rootfs/usr/bin/b"][0].linkname == "rootfs/usr/bin/a"  # still resolves
    assert members["rootfs/bin"][0].linkname == "usr/bin"  # symlinks are relative: unchanged
    assert art.read_metadata(out) == yaml.safe_load(members["metadata.yaml"][1])


def test_pack_split_of_a_vm_image_keeps_the_qcow2_as_rootfs_img(tmp_path: Path) -> None:
    """A VM image (metadata + a qcow2) becomes Incus's unified VM layout: metadata.yaml, then
    the disk byte for byte as `rootfs.img` (a real qcow2 from qemu-img)."""
    import subprocess

    meta = tmp_path / "meta-x.tar"
    with tarfile.open(meta, "w") as tar:
        _add(tar, "metadata.yaml", yaml.safe_dump({"properties": {"os": "opensuse"}}).encode())
    disk = tmp_path / "x"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    out = tmp_path / "vm.tar.zst"
    packed = art.pack_split(meta, disk, out, {"plex.virt": "vm"})
    assert (packed.virt, packed.packages) == ("vm", ())
    with (
        zstandard.ZstdDecompressor().stream_reader(out.open("rb")) as r,
        tarfile.open(fileobj=r, mode="r|") as tar,
    ):
        got = {m.name: (f.read() if (f := tar.extractfile(m)) else b"") for m in tar}
    assert list(got) == ["metadata.yaml", "rootfs.img"]
    assert got["rootfs.img"] == disk.read_bytes()
    assert yaml.safe_load(got["metadata.yaml"])["properties"]["plex.virt"] == "vm"


def test_iter_artifact_members_skips_big_files(tmp_path: Path) -> None:
    src = unified_tar(tmp_path / "src.tar", big=3000)
    out = tmp_path / "a.tar.zst"
    art.pack_unified(src, out)
    got = dict(art.iter_artifact_members(out, max_size=2048))
    assert got["rootfs/etc/hostname"] == b"tiny\n"
    assert "rootfs/var/lib/dpkg/status" in got and "metadata.yaml" in got
    assert "rootfs/big.bin" not in got and "rootfs" not in got


def test_parse_dpkg_status_lists_only_installed_packages() -> None:
    assert art.parse_dpkg_status(STATUS.decode()) == ("bash 5.2.15-2+b7", "zstd 1.5.4+dfsg2-5")
    assert art.parse_dpkg_status("") == ()


# -- manifests and verification ----------------------------------------------------------------


def test_manifest_round_trips_and_sits_next_to_the_artifact(tmp_path: Path) -> None:
    out, m = make_artifact(tmp_path)
    mpath = art.manifest_path_for(out)
    assert mpath.name == f"lab-agent-{DIGEST[:12]}.json"
    assert art.load_manifest(mpath) == m
    data = json.loads(mpath.read_text())
    assert data["format"] == art.FORMAT and data["packages"] == list(m.packages)
    art.verify_artifact(out, m)  # intact: no error


def test_corrupted_byte_is_refused(tmp_path: Path) -> None:
    out, m = make_artifact(tmp_path)
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    out.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=rf"{out.name}: sha256 .* does not match"):
        art.verify_artifact(out, m)


def test_wrong_size_is_refused(tmp_path: Path) -> None:
    out, m = make_artifact(tmp_path)
    with out.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match=rf"{out.name}: size {m.size + 1} does not match"):
        art.verify_artifact(out, m)


def test_manifest_digest_must_match_the_image(tmp_path: Path) -> None:
    out, m = make_artifact(tmp_path)
    with pytest.raises(
        ArtifactError,
        match=r"plex\.digest d1d1d1d1d1d1 does not match the "
        r"manifest's eeeeeeeeeeee",
    ):
        art.verify_artifact(out, replace(m, digest="e" * 64))


def test_missing_or_damaged_manifest_is_refused(tmp_path: Path) -> None:
    out, _ = make_artifact(tmp_path)
    mpath = art.manifest_path_for(out)
    mpath.write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest is not valid JSON"):
        art.load_manifest(mpath)
    mpath.write_text(json.dumps({"format": art.FORMAT, "plex": "lab"}))
    with pytest.raises(ArtifactError, match="manifest has no 'role' field"):
        art.load_manifest(mpath)
    mpath.write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(ArtifactError, match="unknown manifest format"):
        art.load_manifest(mpath)
    mpath.unlink()
    with pytest.raises(ArtifactError, match=rf"{mpath.name}: manifest not found"):
        art.load_manifest(mpath)


# -- import and prune against a recording fake -------------------------------------------------


def test_import_refuses_a_corrupted_artifact_before_touching_incus(
    tmp_path: Path, state_dir: Path
) -> None:
    out, _ = make_artifact(tmp_path)
    raw = bytearray(out.read_bytes())
    raw[-5] ^= 0x01
    out.write_bytes(bytes(raw))
    fake = FakeIncus()
    with pytest.raises(ArtifactError, match="sha256"):
        art.import_image(fake, out)
    assert fake.calls == [] and load_catalog("lab").entries == ()


def test_import_pins_without_moving_and_twice_is_a_no_op(tmp_path: Path, state_dir: Path) -> None:
    out, m = make_artifact(tmp_path)
    fake = FakeIncus()
    assert art.import_image(fake, out) == m
    pinned = f"lab/agent@{DIGEST[:12]}"
    assert fake.calls == [("import", out.name), ("alias", pinned)]
    assert "lab/agent" not in fake.aliases  # deploy's moving alias is not touched
    entry = load_catalog("lab").find("agent", DIGEST)
    assert entry is not None and entry.fingerprint == m.sha256 and entry.baked_at == 1.0
    assert entry.inputs == {"layer": {"x": 1}}
    before = (state_dir / "lab" / "catalog.json").read_bytes()
    art.import_image(fake, out)
    assert fake.calls == [("import", out.name), ("alias", pinned)]
    assert (state_dir / "lab" / "catalog.json").read_bytes() == before


def _entry(n: int, role: str = "agent", pkg: str = "a") -> Entry:
    return Entry(
        role=role,
        digest=f"{n:02d}" * 32,
        package_digest=pkg * 64,
        fingerprint=f"f{n:02d}".ljust(64, "0"),
        baked_at=float(n),
    )


def test_prune_keeps_newest_current_channel_and_in_use(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLEX_CACHE_DIR", str(tmp_path / "cache"))
    layers = tmp_path / "cache" / "layers"
    layers.mkdir(parents=True)
    entries = [
        _entry(1),
        _entry(2),
        _entry(3, pkg="b"),
        _entry(4, pkg="b"),
        _entry(5, pkg="c"),
        _entry(6, role="server", pkg="a"),
    ]
    cat = Catalog("lab", tuple(entries)).promote("stable", "agent", entries[1].digest)
    save_catalog(cat)
    fake = FakeIncus()
    for e in entries:
        fake.add(
            e.fingerprint, **{"plex.digest": e.digest, "plex.package_digest": e.package_digest}
        )
        fake.aliases[f"lab/{e.role}@{e.short}"] = e.fingerprint
    fake.aliases["lab/agent"] = entries[2].fingerprint  # rolled back to generation 3
    fake.aliases["lab/server"] = entries[5].fingerprint
    fake.instances["lab-agent1"] = ObservedInstance(
        "lab-agent1", "Running", "u", {owner.PLEX: "lab", owner.IMAGE: entries[0].digest}
    )
    for pkg in "abc":
        fake.add(
            f"layer{pkg}".ljust(64, "0"),
            **{"plex.layer": "package", "plex.package_digest": pkg * 64},
        )
        fake.aliases[f"plex-pkg/{pkg * 12}"] = f"layer{pkg}".ljust(64, "0")
        (layers / f"{pkg * 64}.tar").write_bytes(b"rootfs")

    plan = art.plan_prune(fake, "lab", keep=1)
    assert [e.digest for e in plan.remove] == [entries[3].digest]
    reasons = {k.entry.digest[:2]: k.reasons for k in plan.kept}
    assert reasons == {
        "05": ("newest",),
        "03": ("current",),
        "02": ("channel stable",),
        "01": ("node lab-agent1",),
        "06": ("newest", "current"),
    }
    assert [la.package_digest[0] for la in plan.layers] == []  # b is still needed by gen 3

    assert art.prune(fake, "lab", keep=1, dry_run=True) == [entries[3]]
    assert fake.calls == []

    # Once nothing uses generation 3 any more, it and its package layer "b" go.
    fake.aliases["lab/agent"] = entries[4].fingerprint
    removed = art.prune(fake, "lab", keep=1)
    assert removed == [entries[3], entries[2]]
    assert {c for c in fake.calls if c[0] == "delete-image"} == {
        ("delete-image", entries[2].fingerprint),
        ("delete-image", entries[3].fingerprint),
        ("delete-image", "layerb".ljust(64, "0")),
    }
    assert {e.digest[:2] for e in load_catalog("lab").entries} == {"01", "02", "05", "06"}
    assert sorted(p.name[0] for p in layers.iterdir()) == ["a", "c"]
