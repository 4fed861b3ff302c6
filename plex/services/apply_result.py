"""What an apply reports: per wave its nodes, time and probe results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plex.deploy.probes import ProbeResult

Report = Callable[[str, str], None]  # (node, what is happening)


@dataclass
class WaveReport:
    index: int
    nodes: list[str]
    seconds: float = 0.0
    probes: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "wave": self.index,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 2),
            "probes": [p.to_json() for p in self.probes],
        }


@dataclass
class ApplyResult:
    waves: list[WaveReport]
    seconds: float
    # node -> (started, ended), seconds since the apply began: nodes overlap across waves.
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "waves": [w.to_json() for w in self.waves]}
