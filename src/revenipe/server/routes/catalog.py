"""Server API: the app's catalog (read, apply, validate without applying)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from revenipe.catalog import parse_catalog
from revenipe.server.routes.common import secret_key_app, server_api_router
from revenipe.server.runtime import Runtime
from revenipe.services import catalogs as catalog_service
from revenipe.wire import catalog as wire

Document = Annotated[dict[str, Any], Body()]


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.get("/catalog", response_model=wire.CatalogOut, summary="The current catalog")
    def get_catalog(request: Request) -> JSONResponse:
        version, catalog = catalog_service.get_catalog(ctx, app_of(request))
        return JSONResponse(wire.catalog_to_wire(version, catalog))

    @router.put(
        "/catalog",
        response_model=wire.CatalogApplied,
        summary="Apply a catalog (the YAML format, as JSON)",
    )
    def put_catalog(request: Request, document: Document) -> JSONResponse:
        app_id = app_of(request)
        applied = catalog_service.apply_catalog(ctx, app_id, parse_catalog(document))
        return JSONResponse(wire.catalog_applied_to_wire(applied))

    @router.post(
        "/catalog/validate",
        response_model=wire.CatalogValid,
        summary="Validate a catalog without applying it",
    )
    def validate_catalog(request: Request, document: Document) -> JSONResponse:
        app_of(request)
        return JSONResponse(wire.catalog_valid_to_wire(parse_catalog(document)))

    return router
