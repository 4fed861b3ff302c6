"""Packer through its CLI: `packer validate` and a streamed `packer build -machine-readable`.

Machine-readable lines are `timestamp,target,type,data...`; commas inside data are written as
`%!(PACKER_COMMA)` and newlines as a literal `\\n`. What plex reads from them:

- `ui` lines (`say`, `message`, `error`): progress, shown as the latest step;
- `artifact,<i>,<key>,...` lines (`builder-id`, `id`, `string`, `files-count`, `file,<n>,<path>`,
  `end`): the build's outputs;
- `error` lines (per build target) and `ui,error` lines: the message a failure reports.

The build runs in its own process group (plex.backends.run.Streamed). When plex is interrupted
(Ctrl-C/SIGTERM raise plex.errors.Interrupted in the main thread) or the build fails, Packer's
group is terminated and the output directory removed, so a cancelled bake leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plex.backends.run import Streamed, run
from plex.errors import BackendError

Progress = Callable[[str], None]
COMMA = "%!(PACKER_COMMA)"
# Packer must not phone home (checkpoint.hashicorp.com): plex only talks to what it was told to.
BASE_ENV = {"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}
_STEP = re.compile(r"^(?:==> |--> |\s+)?(?:[\w.-]+(?: \([\w.-]+\))?: )?(?P<text>.*)$")


def unescape(data: str) -> str:
    return data.replace(COMMA, ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass(frozen=True)
class Line:
    """What plex reads of a machine-readable line: its type and data (a build has one target,
    and the timestamp only marks the line as machine-readable)."""

    type: str
    data: tuple[str, ...]


def parse_line(raw: str) -> Line | None:
    """One machine-readable line, or None for anything else (a panic, a stray print)."""
    parts = raw.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return Line(parts[2], tuple(unescape(p) for p in parts[3:]))


@dataclass(frozen=True)
class Artifact:
    index: int
    builder_id: str = ""
    id: str = ""
    string: str = ""
    files: tuple[str, ...] = ()


@dataclass
class BuildOutput:
    """What one build reported, filled in line by line."""

    artifacts: list[Artifact] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # per-target `error` lines
    ui_errors: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # lines that were not machine-readable
    _open: dict[int, dict[str, object]] = field(default_factory=dict)

    def feed(self, line: Line) -> str | None:
        """Record `line`; returns a progress message when the line is one."""
        if line.type == "ui" and len(line.data) >= 2:
            kind, text = line.data[0], line.data[1].strip()
            if kind == "error" and text:
                self.ui_errors.append(text)
            return step_text(text) if text else None
        if line.type == "error" and line.data:
            self.errors.append(line.data[0].strip())
        elif line.type == "artifact" and len(line.data) >= 2:
            self._artifact(line.data)
        return None

    def _artifact(self, data: tuple[str, ...]) -> None:
        if not data[0].isdigit():
            return
        index, key, rest = int(data[0]), data[1], data[2:]
        cur = self._open.setdefault(index, {"index": index, "files": []})
        if key == "end":
            files = cur.pop("files")
            assert isinstance(files, list)
            self.artifacts.append(
                Artifact(
                    index=index,
                    builder_id=str(cur.get("builder-id", "")),
                    id=str(cur.get("id", "")),
                    string=str(cur.get("string", "")),
                    files=tuple(files),
                )
            )
            del self._open[index]
        elif key == "file" and len(rest) >= 2:
            files = cur["files"]
            assert isinstance(files, list)
            files.append(",".join(rest[1:]))
        elif key in ("builder-id", "id", "string"):
            cur[key] = ",".join(rest)

    def failure(self) -> str:
        """The one line that best says why the build failed."""
        for candidates in (self.errors, self.ui_errors, self.other):
            useful = [c for c in candidates if c and "Some builds didn't complete" not in c]
            if useful:
                return useful[-1].strip().splitlines()[-1]
        return "no error message"


def step_text(text: str) -> str:
    """`==> srv: Provisioning with shell script...` -> `Provisioning with shell script...`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = _STEP.match(first)
    return (m.group("text") if m else first).strip()


class Packer(Protocol):
    """What plex needs from Packer. `PackerCli` is the real one."""

    def version(self) -> str: ...
    def validate(self, template: Path) -> None: ...
    def build(
        self, template: Path, *, output_dir: Path | None = None, progress: Progress | None = None
    ) -> list[Artifact]: ...


class PackerCli:
    def __init__(self, binary: str | None = None, env: dict[str, str] | None = None) -> None:
        self.binary = binary or os.environ.get("PLEX_PACKER") or "packer"
        self.env = {**BASE_ENV, **(env or {})}
        self.terminate_grace = 60.0  # qemu must shut down and Packer clean up

    def _argv(self, *args: str | Path) -> list[str | Path]:
        if shutil.which(self.binary) is None:
            raise BackendError(
                f"packer not found ({self.binary})",
                hint="install Packer (Debian: apt-get install packer) or set "
                "PLEX_PACKER to its path",
            )
        return [self.binary, *args]

    def version(self) -> str:
        res = run(self._argv("version"), env=self.env)
        out = res.stdout.decode(errors="replace").strip().splitlines()
        return out[0].removeprefix("Packer ").strip().removeprefix("v") if out else "unknown"

    def validate(self, template: Path) -> None:
        res = run(
            self._argv("validate", template.name), env=self.env, cwd=template.parent, check=False
        )
        if res.returncode != 0:
            text = (res.stdout + res.stderr).decode(errors="replace")
            raise BackendError(
                f"packer validate {template}: {validate_error(text)}",
                hint="the template is generated by plex: this is a plex bug "
                "or a Packer version it does not support",
            )

    def build(
        self, template: Path, *, output_dir: Path | None = None, progress: Progress | None = None
    ) -> list[Artifact]:
        """Run the build, streaming progress; returns its artifacts or raises BackendError.

        On failure or interruption `output_dir` is removed (Packer's own cleanup does not run
        when it is killed).
        """
        argv = self._argv("build", "-machine-readable", "-color=false", template.name)
        out = BuildOutput()
        ok = False
        proc = Streamed(argv, env=self.env, cwd=template.parent)
        try:
            for raw in proc.lines():
                line = parse_line(raw)
                if line is None:
                    if raw.strip():
                        out.other.append(raw.strip())
                    continue
                msg = out.feed(line)
                if msg and progress is not None:
                    progress(msg)
            code = proc.wait()
            if code != 0:
                raise BackendError(
                    f"packer build failed: {out.failure()}",
                    hint=f"template {template}; PACKER_LOG=1 shows more",
                )
            ok = True
            return out.artifacts
        finally:
            if not ok:
                # Interrupted (Ctrl-C/SIGTERM), a progress callback that raised, or a failure:
                # stop Packer's whole group, then drop what it wrote.
                proc.terminate(self.terminate_grace)
                if output_dir is not None:
                    shutil.rmtree(output_dir, ignore_errors=True)


def validate_error(output: str) -> str:
    """The useful part of `packer validate` output: its `* ...` bullets (Packer wraps long
    ones onto the next lines, which are joined back), else the last `Error` line."""
    bullets: list[str] = []
    current: list[str] | None = None
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("* "):
            current = [line[2:]]
            bullets.append("")
        elif not line:
            current = None
            continue
        elif current is not None:
            current.append(line)
        else:
            continue
        bullets[-1] = " ".join(current)
    if bullets:
        return "; ".join(bullets)
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    return (errors or lines or ["no output"])[-1]


def qcow2_of(artifacts: Sequence[Artifact]) -> Path:
    """The qcow2 file a qemu build produced."""
    for a in artifacts:
        for f in a.files:
            if f.endswith(".qcow2"):
                return Path(f)
    raise BackendError(
        "packer build reported no qcow2 artifact",
        hint="artifacts: " + "; ".join(a.string or a.id for a in artifacts),
    )
