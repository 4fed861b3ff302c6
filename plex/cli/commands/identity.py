"""plex identity: generate once, show fingerprints, rotate on request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, app, check_output, get_plex
from plex.errors import UsageError

if TYPE_CHECKING:
    pass


@app.command("identity")
def identity_cli(
    args: Annotated[list[str], typer.Argument(help="PLEX, or: show PLEX", metavar="[show] PLEX")],
    rotate: Annotated[
        list[str] | None,
        typer.Option(
            "--rotate",
            help="replace the keys of NODE (or master), or 'all' "
            "(every key, the join token and the VRRP secret)",
            metavar="NODE|all",
        ),
    ] = None,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help="seal the secrets at rest with age, to the key in $PLEX_AGE_KEY / "
            "$PLEX_AGE_KEY_FILE / ~/.config/plex/age.key (made there if there is none)",
        ),
    ] = False,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Generate the plex's identity (once; re-running changes nothing) or show its fingerprints."""
    from plex.model import topology
    from plex.store import vault  # age (pyrage) only for a command that encrypts
    from plex.store.identity import encrypt_identity, ensure_identity, identity_dir

    as_json = check_output(output)
    if args[0] == "show":
        if len(args) != 2:
            raise UsageError("usage: plex identity show PLEX")
        return _show(args[1], as_json)
    if len(args) != 1:
        raise UsageError("usage: plex identity PLEX [--rotate NODE|all]")
    plex = get_plex(args[0])
    names = [r if r == "all" else topology.resolve(plex, r).name for r in rotate or []]
    _, written = ensure_identity(plex, rotate=names)
    where = identity_dir(plex.name)
    if encrypt:
        found = vault.find_key()
        if found is None:
            key_file = vault.default_key_file()
            recipient = vault.new_key_file(key_file)
            ui.info(f"new age key {recipient} in {key_file} (0600): keep a copy elsewhere")
        else:
            recipient = vault.recipient_of(found[0])
        removed = encrypt_identity(plex, [recipient])
        ui.info(
            f"identity of '{plex.name}' encrypted to {recipient} "
            f"({where}/{vault.VAULT}; {len(removed)} plaintext secret file(s) removed)"
        )
        return None
    if written:
        ui.info(f"identity of '{plex.name}': wrote {len(written)} file(s) under {where}")
    else:
        ui.info(f"identity of '{plex.name}' is complete and unchanged ({where})")
    return None


def _show(name: str, as_json: bool) -> None:
    from plex.model import topology
    from plex.model.identity import KEY_TYPES
    from plex.store.identity import load_identity

    plex = get_plex(name)
    ident = load_identity(plex.name, public_only=True)  # fingerprints only: works locked
    if ident is None:
        raise UsageError(f"plex '{plex.name}' has no identity yet", f"run: plex identity {name}")
    rows = []
    for n in topology.nodes(plex, reserved=True):
        keys = ident.keys.get(n.name, {})
        for kind in KEY_TYPES:
            if kind in keys:
                rows.append({"node": n.name, "type": kind, "fingerprint": keys[kind].fingerprint})
    if as_json:
        ui.print_json({"plex": plex.name, "keys": rows})
        return
    ui.table(
        f"host keys of {plex.name}",
        ["node", "type", "fingerprint"],
        [[r["node"], r["type"], r["fingerprint"]] for r in rows],
    )
