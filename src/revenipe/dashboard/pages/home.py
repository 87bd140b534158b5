"""The dashboard's front page: the server's apps, and the app switcher's target."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from revenipe.dashboard import auth
from revenipe.dashboard.page import NAV, show, signed_in_page
from revenipe.dashboard.rendering import PREFIX
from revenipe.services.context import ServiceContext


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def apps(request: Request) -> Response:
        page = signed_in_page(ctx, request, title="Apps")
        return show("home.html", page)

    @router.get("/switch")
    def switch(request: Request, app_id: str = "", section: str = "") -> Response:
        page = signed_in_page(ctx, request, title="Apps")
        if not any(app.id == app_id for app in page.apps):
            return auth.redirect(PREFIX + "/")
        path = next((path for key, _, path in NAV if key == section), "")
        return auth.redirect(f"{PREFIX}/apps/{app_id}/{path}")

    return router
