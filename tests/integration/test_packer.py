"""The real Packer: `packer validate` of every generated MicroOS template, and the CLI wrapper
driving real `packer build -machine-readable` runs of a null-builder template (no VM needed).

A real MicroOS build needs KVM and internet (the OpenStack-Cloud qcow2): it is not run here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import FrameType

import pytest

from plex.backends.packer import PackerCli
from plex.bake.packer_template import PLACEHOLDER_CHECKSUM, BuildPaths, VmSpec, packer_template
from plex.bake.seed import build_seed
from plex.bake.vm_files import files_tarball, vm_files
from plex.errors import BackendError, Interrupted
from plex.model.plex import Role
from plex.services.bake_vm import throwaway_key
from tests.unit.test_packer_template import load, vm_recipe

pytestmark = pytest.mark.packer

PACKER = os.environ.get("PLEX_PACKER", "/usr/bin/packer")


@pytest.fixture(scope="module")
def packer() -> PackerCli:
    if shutil.which(PACKER) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"packer is required in CI but {PACKER} is missing", pytrace=False)
        pytest.skip(f"{PACKER} not installed")
    return PackerCli(PACKER)


def write_build_inputs(plex_name: str, role: Role, work: Path) -> Path:
    """Everything a real bake writes before `packer validate`, with a stand-in base file."""
    plex = load(plex_name)
    recipe = vm_recipe(plex, role)
    (work / "seed").mkdir()
    private, public = throwaway_key()  # validate parses the key file
    key = work / "id_ed25519"
    key.write_text(private)
    seed = build_seed(plex.name, role.value, public)
    for name, text in seed.files().items():
        (work / "seed" / name).write_text(text)
    (work / "plex-files.tar").write_bytes(files_tarball(vm_files(plex, recipe)))
    artifacts = []
    for a, _ in recipe.package.artifacts:
        (work / a.filename).write_bytes(b"stand-in")
        artifacts.append((a.name, str(work / a.filename)))
    paths = BuildPaths(
        output_dir=str(work / "output"),
        seed_files=(str(work / "seed/user-data"), str(work / "seed/meta-data")),
        ssh_key=str(key),
        files_tar=str(work / "plex-files.tar"),
        artifacts=tuple(artifacts),
    )
    template = packer_template(
        plex, recipe, paths, PLACEHOLDER_CHECKSUM, VmSpec.for_role(plex, role)
    )
    out = work / "template.json"
    out.write_text(json.dumps(template, indent=2))
    return out


@pytest.mark.parametrize("plex_name", ["omniplex", "verniplex"])
@pytest.mark.parametrize("role", list(Role))
def test_generated_templates_pass_packer_validate(
    packer: PackerCli, tmp_path: Path, plex_name: str, role: Role
) -> None:
    packer.validate(write_build_inputs(plex_name, role, tmp_path))


def test_validate_reports_packers_error(packer: PackerCli, tmp_path: Path) -> None:
    template = write_build_inputs("verniplex", Role.SERVER, tmp_path)
    data = json.loads(template.read_text())
    data["builders"][0]["cd_lable"] = "typo"
    template.write_text(json.dumps(data))
    with pytest.raises(BackendError, match="unknown configuration key: '\"cd_lable\"'"):
        packer.validate(template)
    del data["builders"][0]["cd_lable"]
    template.write_text(json.dumps(data))
    (tmp_path / "id_ed25519").write_text("junk\n")
    with pytest.raises(BackendError) as exc:
        packer.validate(template)
    # Packer wraps this bullet over two lines: the message has both halves on one line.
    assert exc.value.message.endswith(f"Failed to read key '{tmp_path}/id_ed25519': no key found")


def null_template(tmp_path: Path, commands: list[str], files: list[str] | None = None) -> Path:
    t: dict[str, object] = {
        "builders": [{"type": "null", "name": "nb", "communicator": "none"}],
        "provisioners": [{"type": "shell-local", "inline": commands}],
    }
    if files:
        t["post-processors"] = [{"type": "artifice", "files": files}]
    path = tmp_path / "null.json"
    path.write_text(json.dumps(t))
    return path


def test_null_build_streams_progress_and_artifacts(packer: PackerCli, tmp_path: Path) -> None:
    out = tmp_path / "output"
    disk = out / "nb, the disk.qcow2"  # a comma: escaped as %!(PACKER_COMMA) on the wire
    template = null_template(
        tmp_path,
        [
            "echo 'plex-step: packages, then files'",
            f"mkdir -p '{out}' && echo image > '{disk}'",
        ],
        files=[str(disk)],
    )
    seen: list[str] = []
    artifacts = packer.build(template, output_dir=out, progress=seen.append)
    assert "plex-step: packages, then files" in seen
    assert any(s.startswith("Running local shell script") for s in seen)
    files = [f for a in artifacts for f in a.files]
    assert files == [str(disk)]
    assert {a.builder_id for a in artifacts} == {"fnoeding.null", "packer.post-processor.artifice"}
    assert disk.read_text() == "image\n"  # success keeps the output


def test_failed_build_surfaces_packers_error_and_removes_output(
    packer: PackerCli, tmp_path: Path
) -> None:
    out = tmp_path / "output"
    template = null_template(
        tmp_path,
        [
            f"mkdir -p '{out}' && touch '{out}/partial.qcow2'",
            "echo 'zypper: nothing provides rke2-common' >&2; exit 3",
        ],
    )
    with pytest.raises(BackendError) as exc:
        packer.build(template, output_dir=out)
    assert exc.value.message == (
        "packer build failed: Script exited with non-zero exit "
        "status: 3.Allowed exit codes are: [0]"
    )
    assert not out.exists()


def test_interrupt_stops_packer_and_removes_output(packer: PackerCli, tmp_path: Path) -> None:
    """Ctrl-C as plex sees it: the SIGINT handler raises Interrupted in the main thread."""
    out = tmp_path / "output"
    pidfile = tmp_path / "sleep.pid"
    template = null_template(
        tmp_path,
        [
            f"mkdir -p '{out}' && touch '{out}/partial.qcow2'",
            "echo 'plex-step: long step'",
            f"sleep 120 & echo $! > '{pidfile}'; wait",
        ],
    )

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted("interrupted")

    def progress(msg: str) -> None:
        if msg == "plex-step: long step":
            signal.setitimer(signal.ITIMER_REAL, 1.0)  # Ctrl-C a second into the step

    old_int = signal.signal(signal.SIGALRM, raise_interrupted)
    start = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            packer.build(template, output_dir=out, progress=progress)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_int)
    assert time.monotonic() - start < 60
    assert not out.exists()
    sleep_pid = int(pidfile.read_text())
    for _ in range(50):  # the whole group got SIGTERM; give it a moment to exit
        if not Path(f"/proc/{sleep_pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{sleep_pid}").exists(), "the provisioner's child survived"


def test_packer_version(packer: PackerCli) -> None:
    assert packer.version()[0].isdigit()


@pytest.mark.incus
def test_qcow2_imports_as_an_incus_vm_image(incus: object, tmp_path: Path) -> None:
    """The split VM image (metadata tarball + qcow2 as rootfs.img) that a VM bake imports."""
    from plex.backends.incus.client import PylxdIncus
    from plex.backends.run import run
    from plex.services.bake_vm import import_vm_image

    assert isinstance(incus, PylxdIncus)
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    disk = tmp_path / "disk.qcow2"
    run(["qemu-img", "create", "-f", "qcow2", disk, "64M"])
    fp = import_vm_image(incus, disk, "plex test vm image", {"plex.virt": "vm"})
    try:
        info = incus.sync("GET", f"images/{fp}")
        assert info["type"] == "virtual-machine"
        assert info["properties"]["plex.virt"] == "vm"
    finally:
        incus.delete_image(fp)
