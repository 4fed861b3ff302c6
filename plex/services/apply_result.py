"""What an apply reports: per wave its nodes, time and probe results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from plex.deploy.probes import ProbeResult
from plex.model.record import record_json

Report = Callable[[str, str], None]  # (node, what is happening)


class ApplyOptions(TypedDict, total=False):
    """How a plan is applied, passed on unchanged to plex.services.apply.Applier."""

    parallel: int  # nodes worked on at once; 0: adapt to the host
    report: Report | None  # progress, per node
    force: bool  # a failed drain or node deletion is reported and skipped, not fatal


@dataclass
class WaveReport:
    index: int
    nodes: list[str]
    seconds: float = 0.0
    probes: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"wave": self.index, **record_json(self, omit={"index"})}


@dataclass
class ApplyResult:
    waves: list[WaveReport]
    seconds: float
    # node -> (started, ended), seconds since the apply began: nodes overlap across waves.
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return record_json(self, omit={"spans"})
