"""Server API: usage (track, check, reverse a usage event, usage history)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from revenipe.server.requests import ApiTrackRequest, CheckRequest, ReversalRequest
from revenipe.server.routes.common import (
    CatalogIdQuery,
    Cursor,
    CustomerQuery,
    IdempotencyKey,
    Limit,
    TimeQuery,
    external,
    parse_time,
    secret_key_app,
    server_api_router,
)
from revenipe.server.runtime import Runtime
from revenipe.services.usage import history as history_service
from revenipe.services.usage import reversal as reversal_service
from revenipe.services.usage import track as usage_service
from revenipe.wire import usage as wire

REPLAYED = {"Idempotent-Replayed": "true"}


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.post(
        "/customers/{external_id}/track",
        response_model=wire.ApiTrackOut,
        summary="Consume usage for a customer (created if new)",
    )
    def track(
        external_id: str,
        body: ApiTrackRequest,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        result = usage_service.track(
            ctx,
            app_of(request),
            external(external_id),
            body.id,
            body.value,
            access_source_id=body.access_source_id,
            idempotency_key=idempotency_key,
            create_customer=True,
        )
        headers = REPLAYED if result.replayed else None
        return JSONResponse(wire.api_track_to_wire(result), headers=headers)

    @router.post(
        "/customers/{external_id}/check",
        response_model=wire.CheckOut,
        summary="Would a track succeed? Which grants would pay? (changes nothing)",
    )
    def check(external_id: str, body: CheckRequest, request: Request) -> JSONResponse:
        result = usage_service.check(
            ctx,
            app_of(request),
            external(external_id),
            body.id,
            body.value,
            access_source_id=body.access_source_id,
        )
        return JSONResponse(wire.check_to_wire(result))

    @router.get(
        "/usage_events",
        response_model=wire.UsageEventList,
        summary="Usage history, newest first",
    )
    def usage_events(
        request: Request,
        customer: CustomerQuery = None,
        id: CatalogIdQuery = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> JSONResponse:
        events = history_service.usage_history(
            ctx,
            app_of(request),
            customer=external(customer) if customer else None,
            tracked_id=id,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            before_id=cursor,
            limit=limit,
        )
        return JSONResponse(wire.usage_event_list_to_wire(events, limit))

    @router.post(
        "/usage_events/{usage_event_id}/reversals",
        response_model=wire.ReversalOut,
        status_code=201,
        summary="Give back what a usage event consumed",
    )
    def reverse(
        usage_event_id: str,
        request: Request,
        body: ReversalRequest | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        result = reversal_service.reverse(
            ctx,
            app_of(request),
            usage_event_id,
            body.amount if body else None,
            idempotency_key=idempotency_key,
        )
        return JSONResponse(wire.reversal_to_wire(result), 201)

    return router
