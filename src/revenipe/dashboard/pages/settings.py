"""Settings of an app: secret keys, token policy, providers, webhook endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from revenipe.dashboard.page import app_page, show
from revenipe.services.context import ServiceContext


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/apps/{app_id}/settings")
    def settings(request: Request, app_id: str) -> Response:
        page = app_page(ctx, request, app_id, section="settings", title="Settings")
        return show("settings.html", page)

    return router
