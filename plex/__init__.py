"""plex: bake Kubernetes node images and redeploy whole lab clusters on Incus, immutably."""


def __getattr__(name: str) -> str:
    # `plex.__version__` on first use: importlib.metadata costs every command ~25 ms of start-up
    # (bench/cli.py), and only `plex --version` and provenance need it.
    if name != "__version__":
        raise AttributeError(f"module 'plex' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plex")  # one version: pyproject.toml's, as installed
    except PackageNotFoundError:  # a checkout run without installing it
        return "0+unknown"
