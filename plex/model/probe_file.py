"""What a user writes in `deploy/probes.yaml`: per-role health probes. Pure.

`run` and `expect` may name only the variables plex fills in (plex.deploy.probes.variables);
`expect` must be a regular expression once they are: a typo is a validate error, not a deploy
that fails on its first node.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from plex.model.enums import Role

# plex.deploy.probes.variables, .expand and .upstream_variables fill these in.
VARIABLES = frozenset(
    {"node", "address", "vip", "api", "ed25519", "rsa", "kubectl", "kubeconfig", "port"}
    | {"upstream", "upstream_url", "curl_tls"}
)


def _filled(text: str) -> str:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as e:
        raise ValueError(
            f"bad {{variable}}: {e} (write {{{{ and }}}} for literal braces)"
        ) from None
    unknown = sorted(n for n in names if n not in VARIABLES)
    if unknown:
        raise ValueError(
            f"unknown variable {{{unknown[0]}}} (known: {', '.join(sorted(VARIABLES))})"
        )
    return text


def _pattern(text: str) -> str:
    _filled(text)
    try:
        re.compile(text.format(**dict.fromkeys(VARIABLES, "x")))
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeEntry(_Model):
    name: str
    run: Annotated[str, AfterValidator(_filled)]
    expect: Annotated[str, AfterValidator(_pattern)] | None = None
    timeout: float = Field(60.0, gt=0)
    interval: float = Field(1.0, gt=0)
    # `on:` would be YAML 1.1's boolean True.
    runs_on: Literal["self", "master"] = "self"
    per_port: bool = Field(False, description="one probe per registry port ({port})")
    per_upstream: bool = Field(False, description="one probe per registry upstream")
    first: bool = Field(
        False,
        description="the node's other probes start once this one passed (it waits in the "
        "node for what they check)",
    )


class ProbesFile(_Model):
    common: tuple[ProbeEntry, ...] = Field((), description="probes of every role")
    roles: dict[Role, tuple[ProbeEntry, ...]] = {}
