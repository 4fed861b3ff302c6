"""One module per command area; each registers `*_cli` functions on plex.cli.app.app."""
