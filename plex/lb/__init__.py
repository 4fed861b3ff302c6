"""The load balancers, pure: haproxy's runtime API as plex uses it (rendering and parsing)."""
