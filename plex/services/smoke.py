"""Smoke checks after a nightly redeploy: is the staging plex really working?

1. every node runs the image the nightly is about to promote (nothing stale survived),
2. every probe of every node passes again (deploy/probes.yaml), and the VIP is held by one lb,
3. a kube node pulls the plex's smoke image through the plex registry with containerd, the way
   pods would, and the registry serves that image's manifest itself.

Each check is a ProbeResult; the first failure raises (ProbeError, naming node and check).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from plex.deploy.copies import live_instances
from plex.deploy.probes import (
    Executor,
    Probe,
    ProbeResult,
    load_probes,
    probe_node,
    probe_vip,
    run_probe,
)
from plex.errors import ConfigError, ConfigErrors, ProbeError
from plex.model import topology
from plex.model.observed import Observed
from plex.model.plex import Plex, Role
from plex.registry.mirrors import RKE2_CERTS_D, mirror_url
from plex.services.progress import unreported
from plex.store.identity import require_identity

CONTAINERD_SOCKET = "/run/k3s/containerd/containerd.sock"
# ctr ships in RKE2's data dir; a tarball install (and the test stand-in) puts it on PATH.
CTR_PATH = "/var/lib/rancher/rke2/bin:/usr/local/bin:/usr/bin:/bin"
MANIFEST_TYPES = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass(frozen=True)
class ImageRef:
    """`docker.io/library/busybox:1.36` split the way containerd resolves it."""

    host: str
    repository: str
    reference: str  # a tag, or sha256:... for a digest

    @property
    def full(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.host}/{self.repository}{sep}{self.reference}"


def parse_image(ref: str) -> ImageRef:
    """Docker's normalisation: no registry host means docker.io, and a one-part docker.io
    repository is under library/; no tag means latest."""
    if not ref or any(c.isspace() for c in ref):
        raise ValueError(f"'{ref}' is not an image reference")
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", ref
    if "@" in path:
        path, reference = path.split("@", 1)
    elif ":" in path.rsplit("/", 1)[-1]:
        path, reference = path.rsplit(":", 1)
    else:
        reference = "latest"
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not reference or path != path.lower() or not all(path.split("/")):
        raise ValueError(f"'{ref}' is not an image reference")
    return ImageRef(host, path, reference)


def smoke_image(plex: Plex) -> ImageRef:
    """The plex's smoke image, checked against its registry upstreams."""
    raw = plex.nightly.smoke_image
    where = plex.source or f"plex '{plex.name}'"
    try:
        ref = parse_image(raw)
    except ValueError as e:
        raise ConfigErrors([ConfigError(where, "nightly.smoke_image", str(e))]) from None
    names = [u.name for u in plex.registry.upstreams]
    if ref.host not in names:
        raise ConfigErrors(
            [
                ConfigError(
                    where,
                    "nightly.smoke_image",
                    f"registry '{ref.host}' is not one of registry.upstreams ({', '.join(names)})",
                )
            ]
        )
    return ref


def manifest_url(plex: Plex, ref: ImageRef) -> str:
    """The image's manifest on the plex registry (the mirror endpoint nodes use)."""
    base = mirror_url(plex, ref.host).rstrip("/")
    # A mirror with its own path (zot: /v2/<upstream>) replaces /v2; a bare host gets /v2.
    prefix = base if urlsplit(base).path not in ("", "/", "/v2") else f"{base}/v2"
    return f"{prefix}/{ref.repository}/manifests/{ref.reference}"


def pull_probe(plex: Plex, ref: ImageRef, timeout: float = 60.0) -> Probe:
    """containerd on the node pulls the image with the hosts config RKE2 generated from the
    node's registries.yaml (what the kubelet's pulls use).

    The registry passed its probes in the deploy, so a healthy pull takes seconds; the retries
    only cover a cold cache fetching from its upstream."""
    ctr = f"ctr --address {CONTAINERD_SOCKET} -n k8s.io"
    img = shlex.quote(ref.full)
    run = (
        f"export PATH={CTR_PATH}; {ctr} images rm {img} >/dev/null 2>&1; "
        f"{ctr} images pull --hosts-dir {RKE2_CERTS_D} {img} >/tmp/plex-smoke-pull.log 2>&1 "
        f"|| {{ tail -n 5 /tmp/plex-smoke-pull.log; exit 1; }}; "
        f"{ctr} images ls -q name=={img}"
    )
    return Probe(
        f"pull {ref.full}", run, expect=rf"^{re.escape(ref.full)}$", timeout=timeout, interval=5.0
    )


def served_probe(plex: Plex, ref: ImageRef, timeout: float = 30.0) -> Probe:
    """The plex registry itself serves the manifest (so the pull did not need the upstream)."""
    url = manifest_url(plex, ref)
    run = (
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 "
        f"-H 'Accept: {MANIFEST_TYPES}' {shlex.quote(url)}"
    )
    return Probe(
        f"registry serves {ref.repository}:{ref.reference}",
        run,
        expect="^200$",
        timeout=timeout,
        interval=2.0,
    )


def pull_node(plex: Plex) -> topology.Node:
    """The kube node that pulls: an agent if there is one (that is where pods run)."""
    nodes = topology.nodes(plex)
    agents = [n for n in nodes if n.role is Role.AGENT]
    return agents[0] if agents else topology.master(plex)


def check_images(
    plex: Plex, running: Mapping[str, str | None], expected: Mapping[Role, str]
) -> ProbeResult:
    """Every node exists and runs its role's expected image digest (`running`: node -> digest
    from its `user.plex.image` key)."""
    wrong = []
    for n in topology.nodes(plex):
        want = expected.get(n.role)
        have = running.get(n.name)
        if want is not None and have != want:
            wrong.append(f"{n.name} runs {(have or 'nothing')[:12]}, not {want[:12]}")
    if wrong:
        raise ProbeError(
            f"{len(wrong)} node(s) do not run the baked image: {'; '.join(wrong)}",
            hint="the deploy did not converge; see plex status",
        )
    return ProbeResult(
        "*", "nodes run the baked images", True, 0.0, f"{len(topology.nodes(plex))} nodes", 1
    )


Report = Callable[[str, str], None]


def smoke(
    plex: Plex,
    incus: Executor,
    root: Path,
    expected: Mapping[Role, str],
    observed: Observed,
    report: Report | None = None,
) -> list[ProbeResult]:
    """Run every smoke check; returns their results, raises ProbeError on the first failure.
    Each node is checked on the instance serving it (an evacuated copy while its member is
    down: plex.deploy.copies)."""
    say = report or unreported
    names = [n.name for n in topology.nodes(plex)]
    live = live_instances(observed, names)
    running = running_images(observed, live)
    identity = require_identity(plex)
    probes = load_probes(root / "deploy" / "probes.yaml")
    ref = smoke_image(plex) if topology.registry_node(plex) is not None else None
    results = [check_images(plex, running, expected)]
    for node in topology.nodes(plex):
        say(node.name, "probes")
        results += probe_node(incus, plex, node, identity, probes, instances=live)
    if any(n.role is Role.LB for n in topology.nodes(plex)):
        say("lb", "VIP")
        results.append(probe_vip(incus, plex))
    if ref is not None:
        node = pull_node(plex)
        say(node.name, f"pull {ref.full}")
        on = live.get(node.name, node.name)
        results.append(run_probe(incus, on, node.name, pull_probe(plex, ref)))
        results.append(run_probe(incus, on, node.name, served_probe(plex, ref)))
    return results


def running_images(observed: Observed, live: Mapping[str, str]) -> dict[str, str | None]:
    """node -> the image digest its serving instance was created from (`user.plex.image`)."""
    return {node: observed.instances[inst].image or None for node, inst in live.items()}
