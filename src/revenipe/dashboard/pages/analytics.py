"""Analytics: a placeholder of the dashboard skeleton (the page is being built)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from revenipe.dashboard.page import app_page, show
from revenipe.services.context import ServiceContext


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/apps/{app_id}/analytics")
    def analytics(request: Request, app_id: str) -> Response:
        page = app_page(ctx, request, app_id, section="analytics", title="Analytics")
        return show("analytics.html", page)

    return router
