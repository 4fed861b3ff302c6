"""Reading what users edit: the plex YAML loader (line map) and cross-field checks."""
