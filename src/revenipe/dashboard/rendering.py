"""The template environment: every template autoescaped (data is never marked safe),
undefined names an error rather than an empty string, and Unicode's bidirectional
controls shown as what they are (`visible_controls`)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from revenipe import __version__

PREFIX = "/dashboard"
"""Where the server mounts the dashboard; every link is built on it."""

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Characters that reorder the text around them without showing themselves: in an
external id, a name or a key, `"user-\u202egnp.exe"` reads as "user-exe.png"."""
_SHOWN = {ord(c): f"[U+{ord(c):04X}]" for c in BIDI_CONTROLS}


def visible_controls(value: Any) -> Any:
    """Every value a template prints, with each bidirectional control replaced by its
    code point in brackets: an operator sees what a customer's id really holds, and no
    value reorders the page around it. Letters of right-to-left scripts are untouched
    (they need no controls to show)."""
    if isinstance(value, Markup):
        return Markup(str.translate(value, _SHOWN))  # brackets and letters: still safe
    if isinstance(value, str):
        return value.translate(_SHOWN)
    return value


environment = Environment(
    loader=PackageLoader("revenipe.dashboard", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=visible_controls,
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
