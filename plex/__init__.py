"""plex: bake Kubernetes node images and redeploy whole lab clusters on Incus, immutably."""

__version__ = "0.1.0"
