"""Secrets reach nodes at creation, never through an image: the per-node private files, and a
scan of every rendered file of every role of every repo plex (containers and MicroOS VMs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plex.bake.context import template_context
from plex.bake.packer_template import PLACEHOLDER_CHECKSUM, BuildPaths, VmSpec, packer_template
from plex.bake.recipe import load_base_image, load_role_recipe, make_recipe
from plex.bake.render import Renderer
from plex.bake.secret_scan import Hit, scan
from plex.bake.seed import build_seed
from plex.bake.vm_files import files_tarball, vm_files
from plex.model import topology
from plex.model.identity import TOKEN_FILE, VRRP_AUTH_FILE, Identity, SystemKeyGen, compute_identity
from plex.model.plex import Plex, Role
from plex.plexfile.load import load_plex
from tests.unit.test_packer_template import MICROOS, fixed_artifacts

REPO = Path(__file__).resolve().parents[2]
PLEXES = sorted(p.stem for p in (REPO / "plexes").glob("*.yaml"))


@pytest.fixture(scope="module")
def identities() -> dict[str, tuple[Plex, Identity]]:
    out: dict[str, tuple[Plex, Identity]] = {}
    for name in PLEXES:
        plex = load_plex(REPO / "plexes" / f"{name}.yaml")
        out[name] = (plex, compute_identity(plex, None, SystemKeyGen()))
    return out


def test_each_role_gets_exactly_its_secrets(identities: dict[str, tuple[Plex, Identity]]) -> None:
    plex, identity = identities["demo"]
    by_role: dict[Role, set[str]] = {}
    for node in topology.nodes(plex):
        files = identity.private_files(node.name, node.role)
        by_role.setdefault(node.role, set()).update(f.path for f in files)
        for f in files:
            assert f.mode == (0o644 if f.path.endswith(".pub") else 0o600), f
            assert f.data.decode().strip() not in repr(f)
            assert identity.token not in repr(f)
    keys = {
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/etc/ssh/ssh_host_rsa_key",
        "/etc/ssh/ssh_host_rsa_key.pub",
    }
    assert by_role[Role.REGISTRY] >= keys and TOKEN_FILE not in by_role[Role.REGISTRY]
    assert VRRP_AUTH_FILE in by_role[Role.LB] and TOKEN_FILE not in by_role[Role.LB]
    assert TOKEN_FILE in by_role[Role.SERVER] and TOKEN_FILE in by_role[Role.AGENT]
    assert VRRP_AUTH_FILE not in by_role[Role.SERVER] | by_role[Role.AGENT]
    server = topology.master(plex)
    token = next(
        f for f in identity.private_files(server.name, server.role) if f.path == TOKEN_FILE
    )
    assert yaml.safe_load(token.data) == {"token": identity.token}
    lb = next(n for n in topology.nodes(plex) if n.role is Role.LB)
    auth = next(f for f in identity.private_files(lb.name, lb.role) if f.path == VRRP_AUTH_FILE)
    assert auth.data.decode().split() == ["auth_pass", identity.vrrp_secret]


def test_needles_cover_every_private_key_line(identities: dict[str, tuple[Plex, Identity]]) -> None:
    plex, identity = identities["demo"]
    nodes = [(n.name, n.role) for n in topology.nodes(plex, reserved=True)]
    needles = {t: w for w, t in identity.secret_needles(nodes)}
    assert identity.token in needles and identity.vrrp_secret in needles
    for keys in identity.keys.values():
        for key in keys.values():
            body = [ln for ln in key.private.splitlines() if not ln.startswith("-----")]
            assert body and all(ln in needles for ln in body if len(ln) >= 8)


def test_scan_finds_secrets_across_chunk_boundaries() -> None:
    data = b"\x00" * 1000 + b"xxTOKEN-123456yy" + b"\xff" * 500 + b"TOKEN-123456"
    needles = [("token", "TOKEN-123456"), ("other", "absent-needle")]
    for size in (1, 3, 7, 64, 5000):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert scan(chunks, needles) == [Hit("token", 1002), Hit("token", 1516)], size


@pytest.mark.parametrize("name", PLEXES)
def test_no_rendered_file_of_any_role_holds_a_secret(
    identities: dict[str, tuple[Plex, Identity]], name: str
) -> None:
    """What goes into images: every role's rendered files (containers), and for MicroOS the
    files tarball, the build seed and the Packer template: everything a VM bake hands Packer.
    None may contain any secret of the identity."""
    plex, identity = identities[name]
    needles = list(
        identity.secret_needles([(n.name, n.role) for n in topology.nodes(plex, reserved=True)])
    )
    assert len(needles) > 10
    renderer = Renderer(REPO / "bake" / "templates")
    for role in (r for r, rc in plex.roles.items() if rc.count):
        rr = load_role_recipe(REPO / "bake", role, plex.registry.engine)
        for base_name in {plex.os_for(role).base, MICROOS}:
            base = load_base_image(REPO / "images", base_name)
            recipe = make_recipe(
                plex,
                role,
                rr,
                base,
                renderer,
                template_context(plex, identity, role),
                fixed_artifacts(plex),
            )
            blobs = [f.content for f in recipe.layer.files]
            blobs.append(json.dumps(recipe.provenance()).encode())
            if base.kind == "qcow2":
                blobs.append(files_tarball(vm_files(plex, recipe)))
                # The build VM's cloud-init seed (its key is the bake's throwaway one).
                seed = build_seed(plex.name, role.value, "ssh-ed25519 AAAA throwaway")
                blobs.extend(text.encode() for text in seed.files().values())
                blobs.append(
                    json.dumps(
                        packer_template(
                            plex,
                            recipe,
                            BuildPaths.placeholder(recipe),
                            PLACEHOLDER_CHECKSUM,
                            VmSpec.for_role(plex, role),
                        )
                    ).encode()
                )
            assert scan(blobs, needles) == [], (name, role, base_name)
