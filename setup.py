"""Ship bake/, deploy/ and images/ inside the wheel (as plex/_data/), so an installed plex works
outside a checkout; plex.plexfile.home.project_root finds them. Metadata is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("bake", "deploy", "images")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout itself
        for name in DATA:
            shutil.copytree(
                Path(name), Path(self.build_lib) / "plex" / "_data" / name, dirs_exist_ok=True
            )


setup(cmdclass={"build_py": BuildPyWithData})
