"""Server API: usage (track, check, reverse a usage event, usage history)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from revenipe.engine.errors import ErrorCode
from revenipe.server.errors import STATUS_BY_CODE
from revenipe.server.requests import (
    ApiTrackRequest,
    CheckRequest,
    ReversalRequest,
    TrackBatchRequest,
)
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
from revenipe.services.usage import batch as batch_service
from revenipe.services.usage import history as history_service
from revenipe.services.usage import reversal as reversal_service
from revenipe.services.usage import track as usage_service
from revenipe.wire import usage as wire

REPLAYED = {"Idempotent-Replayed": "true"}
TRACK_BATCH_PATH = "/v1/track/batch"


def _status_of(code: ErrorCode) -> int:
    return STATUS_BY_CODE.get(code, 400)


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
        TRACK_BATCH_PATH.removeprefix("/v1"),
        response_model=wire.TrackBatchOut,
        summary="Many tracks at once, each as if alone, answered in order; safe to retry",
    )
    def track_batch(body: TrackBatchRequest, request: Request) -> JSONResponse:
        app_id = app_of(request)
        items = [
            batch_service.BatchItem(i.customer, i.id, i.value, i.idempotency_key)
            for i in body.items
        ]
        outcomes = batch_service.track_batch(ctx, app_id, items)
        return JSONResponse(wire.track_batch_to_wire(outcomes, _status_of))

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
