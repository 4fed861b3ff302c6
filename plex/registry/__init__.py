"""The plex registry: a pull-through cache on the registry node, and the node-side mirrors.

Pure rendering only (no daemon, no subprocess): `zot` renders Zot's config.json (one instance
fronts every upstream, each under its own path prefix), `distribution` renders one Debian
docker-registry proxy per upstream (one port each), `mirrors` renders what the Kubernetes nodes
need to pull through it (RKE2 registries.yaml, containerd hosts.toml), and `credentials` loads
the upstream logins without ever printing a password.

Every renderer returns plain data; `engines.engine_files` / `mirrors.node_files` wrap it into
`base.RenderedFile`s carrying the target path, owner and mode, and whether the content is secret.
"""
