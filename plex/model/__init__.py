"""Pure data: the plex model and enums, instance marks, identity, topology, Observed, ImageRef."""
