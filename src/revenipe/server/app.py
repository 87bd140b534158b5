"""Building the ASGI application."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from revenipe import __version__
from revenipe.server import api, client_protocol
from revenipe.server.errors import install_error_handlers
from revenipe.server.limits import BodySizeLimit
from revenipe.server.runtime import Runtime
from revenipe.server.settings import ServerSettings
from revenipe.services.context import ServiceContext, utc_now
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


def create_app(
    settings: ServerSettings | None = None,
    *,
    context: ServiceContext | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """The ASGI app. Opens (and migrates) the database unless a `context` is given."""
    settings = settings or ServerSettings.from_env()
    ctx = context or ServiceContext(db=open_database(settings.database_url), clock=clock)
    runtime = Runtime(ctx=ctx, settings=settings)
    app = FastAPI(
        title="Revenipe",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(client_protocol.build_router(runtime))
    app.include_router(api.build_router(runtime))

    @app.get("/v1/health", tags=["operations"], summary="Liveness (touches nothing)")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from environment."""
    return create_app(ServerSettings.from_env())
