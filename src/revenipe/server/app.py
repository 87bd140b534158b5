"""Building the ASGI application."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig

from revenipe import __version__
from revenipe.dashboard import PREFIX as DASHBOARD_PREFIX
from revenipe.dashboard import create_dashboard
from revenipe.server.errors import install_error_handlers
from revenipe.server.lean_track import LeanTrack
from revenipe.server.limits import BodySizeLimit, ClientFloodLimit
from revenipe.server.routes import (
    apps,
    catalog,
    client_protocol,
    customers,
    ledger,
    purchases,
    reservations,
    revenuecat,
    sandbox_clock,
    sandbox_pages,
    stripe,
    usage,
    webhook_endpoints,
)
from revenipe.server.routes.usage import TRACK_BATCH_PATH
from revenipe.server.runtime import Runtime
from revenipe.server.settings import ServerSettings
from revenipe.services.context import ServiceContext, utc_now
from revenipe.services.outbound.worker import DeliveryWorker
from revenipe.services.rollups import RollupWorker
from revenipe.storage.database import open_database

DESCRIPTION = """\
Usage-based entitlements: credits, limits and feature access.

* **Client protocol** (`/v1/client/...`, `/v1/customer/...`): what app clients call, with
  `Authorization: <public app id>` and, unless the app's token policy is `open`, a
  customer token in `X-Revenipe-Customer-Token`.
* **Server API** (`/v1/...`): for the app's backend, with `Authorization: Bearer <secret
  key>`.

Errors are JSON objects with `code` and `message`. A refused track is a 200 answer
with `success: false`.
"""


PUBLIC_PREFIXES = ("/v1/sandbox/payment_intents/", "/v1/sandbox/setup_intents/", "/v1/webhooks/")
"""Reached by customers' devices with a client secret, or by providers with a signature,
not with an app id or a key."""


_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: ServerSettings | None = None,
    *,
    context: ServiceContext | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """The ASGI app. Opens (and migrates) the database unless a `context` is given."""
    settings = settings or ServerSettings.from_env()
    ctx = context or ServiceContext(
        db=open_database(settings.database_url, postgres_write_lanes=settings.postgres_write_lanes),
        clock=clock,
    )
    runtime = Runtime(ctx=ctx, settings=settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Outbound webhooks: every server process delivers (docs/adr/0019).
        worker = DeliveryWorker(ctx, settings.webhook_delivery)
        worker.start()
        # The dashboard's usage rollups: every server process folds (docs/adr/0021).
        rollup_worker = RollupWorker(ctx)
        rollup_worker.start()
        try:
            yield
        finally:
            rollup_worker.stop()
            worker.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="Revenipe",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for routes in (
        client_protocol,
        purchases,
        apps,
        catalog,
        customers,
        usage,
        reservations,
        sandbox_clock,
        ledger,
        sandbox_pages,
        stripe,
        revenuecat,
        webhook_endpoints,
    ):
        app.include_router(routes.build_router(runtime))

    # The operator dashboard: server-rendered pages of its own (docs/adr/0020).
    app.mount(DASHBOARD_PREFIX, create_dashboard(ctx, public_url=settings.public_url))

    @app.get("/v1/health", tags=["operations"], summary="Liveness (touches nothing)")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    # Innermost, behind the limits: the track endpoints' lean path (ADR 0016).
    app.add_middleware(LeanTrack, runtime=runtime)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
        max_bytes_by_path={TRACK_BATCH_PATH: settings.max_batch_body_bytes},
    )
    # Outermost: a flood is refused before its body is even read.
    app.add_middleware(
        ClientFloodLimit, by_address=runtime.client_by_address, by_app=runtime.client_by_app
    )
    _document_security_and_errors(app)
    return app


def _document_security_and_errors(app: FastAPI) -> None:
    """OpenAPI as we serve it: our 400 error shape instead of FastAPI's 422, and the
    three ways of authenticating declared per operation."""
    build_default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build_default()
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        components["securitySchemes"] = {
            "appId": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "The app's public id, bare (no 'Bearer').",
            },
            "customerToken": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Revenipe-Customer-Token",
                "description": "A customer token minted by the app's "
                "backend (required unless the app's token policy is open).",
            },
            "secretKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the app's secret keys.",
            },
        }
        for path, operations in document.get("paths", {}).items():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
                if path == "/v1/health" or path.startswith(PUBLIC_PREFIXES):
                    operation["security"] = []
                    continue
                if path.startswith(("/v1/client/", "/v1/customer/")):
                    operation["security"] = [{"appId": [], "customerToken": []}, {"appId": []}]
                else:
                    operation["security"] = [{"secretKey": []}]
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from environment.

    The app built here lives as long as the server process: it is frozen out of the
    garbage collector's passes (`gc.freeze`, after collecting what building it left),
    which would otherwise walk it all on every full pass and stall every request in
    flight for tens of milliseconds (docs/adr/0015, the HTTP tail)."""
    app = create_app(ServerSettings.from_env())
    gc.collect()
    gc.freeze()
    return app
