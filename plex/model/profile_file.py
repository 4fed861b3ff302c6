"""What a user writes in a role profile (`deploy/profiles/<role>.yaml`). Pure.

`config:` and `devices:` apply to every virt, `container:` / `vm:` add keys for one virt only.
Values are Incus config strings; YAML's `true` and numbers are accepted and converted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | bool | int | float


class ProfileLayer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    config: dict[str, Scalar] = Field(default_factory=dict)
    devices: dict[str, dict[str, Scalar]] = Field(default_factory=dict)


class ProfileFile(ProfileLayer):
    container: ProfileLayer = ProfileLayer()
    vm: ProfileLayer = ProfileLayer()
