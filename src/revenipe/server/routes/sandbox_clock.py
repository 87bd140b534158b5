"""Server API: a sandbox app's test clock (read it, move it forward)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from revenipe.server.requests import ClockAdvance
from revenipe.server.routes.common import secret_key_app, server_api_router
from revenipe.server.runtime import Runtime
from revenipe.services.purchases.sandbox import clock as clock_service
from revenipe.wire import apps as wire


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.get("/sandbox/clock", response_model=wire.ClockOut, summary="A sandbox app's time")
    def sandbox_clock(request: Request) -> JSONResponse:
        return JSONResponse(wire.clock_to_wire(clock_service.clock(ctx, app_of(request))))

    @router.post(
        "/sandbox/clock/advance",
        response_model=wire.ClockOut,
        summary="Move a sandbox app's clock forward (renewals, trials and expiry follow)",
    )
    def advance_sandbox_clock(body: ClockAdvance, request: Request) -> JSONResponse:
        seconds = body.days * 86_400 + body.hours * 3_600 + body.seconds
        state = clock_service.advance_clock(ctx, app_of(request), seconds)
        return JSONResponse(wire.clock_to_wire(state))

    return router
