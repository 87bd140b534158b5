"""The template environment: every template autoescaped (data is never marked safe),
undefined names an error rather than an empty string."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from revenipe import __version__

PREFIX = "/dashboard"
"""Where the server mounts the dashboard; every link is built on it."""

environment = Environment(
    loader=PackageLoader("revenipe.dashboard", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals.update(prefix=PREFIX, version=__version__)


def render_text(template: str, **values: Any) -> str:
    return environment.get_template(template).render(**values)


def render(
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page: `values` are the template's names (a page without `page` has no nav)."""
    values.setdefault("page", None)
    return HTMLResponse(render_text(template, **values), status, headers=headers)
