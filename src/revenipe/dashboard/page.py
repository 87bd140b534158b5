"""What every signed-in page shows around its content: the operator, the app switcher,
the navigation, a flash message, formatting in the operator's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from revenipe.dashboard import auth
from revenipe.dashboard.format import Formatter
from revenipe.dashboard.rendering import PREFIX, render
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services import apps as app_service
from revenipe.services.context import ServiceContext
from revenipe.storage.apps import AppRow
from revenipe.storage.operators import OperatorRow

NAV = (
    ("overview", "Overview", ""),
    ("customers", "Customers", "customers"),
    ("analytics", "Analytics", "analytics"),
    ("catalog", "Catalog", "catalog"),
    ("settings", "Settings", "settings"),
)
"""(section, label, path under /dashboard/apps/{app_id}/) of the navigation."""


@dataclass(frozen=True)
class Page:
    operator: OperatorRow
    csrf_token: str
    fmt: Formatter
    apps: list[AppRow]
    app: AppRow | None
    section: str
    title: str
    flash: auth.Flash | None = None

    @staticmethod
    def app_url_of(app_id: str) -> str:
        return f"{PREFIX}/apps/{app_id}"

    @property
    def app_url(self) -> str:
        """`/dashboard/apps/{id}` (no trailing slash)."""
        if self.app is None:
            return PREFIX
        return f"{PREFIX}/apps/{self.app.id}"

    def url(self, path: str = "") -> str:
        """A page of the current app: `page.url("customers")`."""
        return f"{self.app_url}/{path}"

    @property
    def nav(self) -> tuple[tuple[str, str, str], ...]:
        return NAV


def signed_in_page(ctx: ServiceContext, request: Request, *, section: str = "", title: str) -> Page:
    """A page that belongs to no app (the list of apps)."""
    signed = auth.require_operator(ctx, request)
    return Page(
        operator=signed.operator,
        csrf_token=signed.csrf_token,
        fmt=Formatter(signed.operator.time_zone),
        apps=app_service.list_apps(ctx),
        app=None,
        section=section,
        title=title,
        flash=auth.read_flash(request),
    )


def app_page(
    ctx: ServiceContext, request: Request, app_id: str, *, section: str, title: str
) -> Page:
    """A page of one app; `app_not_found` (404) for an app the server does not have."""
    page = signed_in_page(ctx, request, section=section, title=title)
    for app in page.apps:
        if app.id == app_id:
            return Page(
                operator=page.operator,
                csrf_token=page.csrf_token,
                fmt=page.fmt,
                apps=page.apps,
                app=app,
                section=section,
                title=title,
                flash=page.flash,
            )
    raise RevenipeError(ErrorCode.APP_NOT_FOUND, "this server has no such app")


def show(template: str, page: Page, *, status: int = 200, **values: Any) -> HTMLResponse:
    """Render a page of the dashboard; the flash message is shown once."""
    values.setdefault("title", page.title)
    response = render(template, status=status, page=page, fmt=page.fmt, **values)
    if page.flash is not None:
        response.delete_cookie(auth.FLASH_COOKIE, path=PREFIX)
    return response
