"""plex: bake Kubernetes node images and redeploy whole lab clusters on Incus, immutably."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("plex")  # one version: pyproject.toml's, as installed
except PackageNotFoundError:  # a checkout run without installing it
    __version__ = "0+unknown"
