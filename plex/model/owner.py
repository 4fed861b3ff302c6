"""The `user.plex.*` config keys that mark what plex owns in Incus.

Anything without `user.plex.plex` set to the plex's name is not plex's and is never touched.
"""

from __future__ import annotations

PREFIX = "user.plex."
PLEX = "user.plex.plex"  # plex name
ROLE = "user.plex.role"
NODE = "user.plex.node"  # node name (equals the instance name)
IMAGE = "user.plex.image"  # digest of the image the node was created from
# digest of the instance spec (profile, limits, devices) it was created with
SPEC = "user.plex.spec"
GENERATION = "user.plex.generation"  # bumps on every replacement
BUILD = "user.plex.build"  # set on transient bake instances: the bake's id ("<pid>@<host>")
CREATED = "user.plex.created"  # unix time of creation
DEPLOY = "user.plex.deploy"  # id of the deploy run that created it
READY = "user.plex.ready"  # "true" once the node passed its probes; unset = unfinished deploy
