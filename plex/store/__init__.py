"""Local disk: state dirs, atomic writes, locks, catalog, channels, identity, downloads."""
