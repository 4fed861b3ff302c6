"""plex registry up / warm / stats: plain functions over the Incus or Docker backend.

One module per job: `node` (where the registry runs), `up` (the registry node or its Docker
containers), `cache` (talking to the engine where it runs), `warming` (pulling an image list
through it), `catalog` (what it holds, hits and misses). The names below are the use cases the
CLI calls.

Upstream passwords go from the credentials file straight into files on the registry (pushed
0600/0640 or copied into a container); nothing here prints or logs them.
"""

from plex.services.registry.cache import Cache, DockerCache, IncusCache, Reply
from plex.services.registry.catalog import (
    Repository,
    Stats,
    distribution_hits,
    parse_tag_paths,
    stats,
    upstream_failures,
)
from plex.services.registry.node import container_name, endpoints, registry_node
from plex.services.registry.up import (
    UpResult,
    docker_specs,
    down_docker,
    registry_only,
    registry_plan,
    up_docker,
    up_incus,
)
from plex.services.registry.warming import (
    Reference,
    Warmed,
    cache_path,
    default_image_list,
    failed_images,
    parse_reference,
    read_image_list,
    warm,
    warm_one,
)

__all__ = [
    "Cache",
    "DockerCache",
    "IncusCache",
    "Reference",
    "Reply",
    "Repository",
    "Stats",
    "UpResult",
    "Warmed",
    "cache_path",
    "container_name",
    "default_image_list",
    "distribution_hits",
    "docker_specs",
    "down_docker",
    "endpoints",
    "failed_images",
    "parse_reference",
    "parse_tag_paths",
    "read_image_list",
    "registry_node",
    "registry_only",
    "registry_plan",
    "stats",
    "up_docker",
    "up_incus",
    "upstream_failures",
    "warm",
    "warm_one",
]
