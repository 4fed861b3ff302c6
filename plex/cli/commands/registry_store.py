"""plex registry login: the CI store's endpoint and how to log in to it (plex.registry.store).

The password lives in the plex's identity. It is printed only when asked (`--password`, for a
pipe into `skopeo login --password-stdin`) or written into an auth file of the caller's
choosing (0600), never in a table or JSON listing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from plex.cli import ui
from plex.cli.app import OutputOpt, PlexArg, check_output, get_plex
from plex.cli.commands.registry_config import registry_app
from plex.errors import UsageError

PasswordOpt = Annotated[
    bool, typer.Option("--password", help="print only the password (for --password-stdin)")
]
AuthfileOpt = Annotated[
    Path | None,
    typer.Option("--authfile", help="add the login to this auth.json (0600)", metavar="FILE"),
]


@registry_app.command("login")
def login_cli(
    plex: PlexArg,
    password: PasswordOpt = False,
    authfile: AuthfileOpt = None,
    output: OutputOpt = ui.Output.TABLE,
) -> None:
    """Show the CI store's endpoint and a login line (registry.store in the plex file)."""
    from plex.registry import store  # models load when a command runs, not for --help
    from plex.store.identity import require_identity
    from plex.store.state import write_private

    as_json = check_output(output)
    p = get_plex(plex)
    about = store.info(p)
    if about is None:
        raise UsageError(
            f"plex '{p.name}' has no registry store",
            hint="set registry.store.enabled: true (and a registry role), then plex deploy",
        )
    secret = require_identity(p).store_password
    if not secret:
        raise UsageError(f"the identity of '{p.name}' has no store password", "run: plex identity")
    if password:
        typer.echo(secret)
        return
    if authfile is not None:
        try:
            doc = json.loads(authfile.read_text()) if authfile.exists() else {}
        except (OSError, ValueError) as e:
            raise UsageError(f"{authfile}: not a readable auth file ({e})") from None
        doc.setdefault("auths", {})[about["host"]] = store.auth_entry(about["user"], secret)
        write_private(authfile, json.dumps(doc, indent=2) + "\n")
    if as_json:
        ui.print_json({"plex": p.name, **about, "authfile": str(authfile) if authfile else None})
        return
    ui.info(f"store {about['endpoint']} ({about['engine']}), user {about['user']}")
    ui.info(f"push images as {about['push_prefix']}NAME:TAG (plain http)")
    if authfile is not None:
        ui.info(f"login written to {authfile}: skopeo copy --authfile {authfile} ...")
        return
    ui.info(
        f"plex registry login {p.name} --password | skopeo login --tls-verify=false "
        f"--username {about['user']} --password-stdin {about['host']}"
    )
