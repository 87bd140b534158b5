"""Server API: the ledger export, oldest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from revenipe.server.routes.common import (
    CustomerQuery,
    Limit,
    external,
    secret_key_app,
    server_api_router,
)
from revenipe.server.runtime import Runtime
from revenipe.services.usage import history as history_service
from revenipe.wire import ledger as wire

EntryCursor = Annotated[int | None, Query(ge=0, le=2**63 - 1)]


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.get("/ledger", response_model=wire.LedgerPage, summary="Ledger export, oldest first")
    def ledger(
        request: Request,
        customer: CustomerQuery = None,
        cursor: EntryCursor = None,
        limit: Limit = 1000,
    ) -> JSONResponse:
        entries = history_service.ledger_export(
            ctx,
            app_of(request),
            customer=external(customer) if customer else None,
            after_id=cursor or 0,
            limit=limit,
        )
        return JSONResponse(wire.ledger_page_to_wire(entries, limit))

    return router
