"""jinja2 rendering with StrictUndefined: an undefined variable is an error naming the template."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from plex.errors import ConfigError, ConfigErrors


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


class Renderer:
    def __init__(self, templates: Path) -> None:
        import jinja2  # start-up time: `plex validate` loads recipes' modules, never renders

        self.templates = templates
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # noqa: S701 - config files, not HTML
        )
        self.env.filters["to_yaml"] = _to_yaml

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        import jinja2  # loaded by __init__ already

        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            raise ConfigErrors(
                [ConfigError(str(self.templates / name), "", "template not found")]
            ) from None
        except jinja2.UndefinedError as e:
            raise ConfigErrors(
                [ConfigError(str(self.templates / name), "", f"undefined variable: {e.message}")]
            ) from None
        except jinja2.TemplateSyntaxError as e:
            raise ConfigErrors(
                [
                    ConfigError(
                        str(self.templates / name), "", f"template syntax: {e.message}", e.lineno
                    )
                ]
            ) from None
