"""Reservations (docs/concepts/reservations.md): the server API (secret key) and the
client protocol's extension (customer token; a customer holds, settles, releases and
reads only its own reservations, another's id answers 404 as an unknown one does).

A hold the grants cannot pay, and a settle of a closed reservation, are answers
(HTTP 200, `success: false`); replays carry `Idempotent-Replayed: true`.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from revenipe.server import requests
from revenipe.server.routes.common import (
    ERRORS,
    IdempotencyKey,
    external,
    secret_key_app,
    server_api_router,
)
from revenipe.server.runtime import Runtime
from revenipe.services.customers import CustomerRef
from revenipe.services.usage import reservations as service
from revenipe.services.usage.reservations import CloseResult, HoldResult
from revenipe.wire import reservations as wire

REPLAYED = {"Idempotent-Replayed": "true"}


def _hold_answer(result: HoldResult) -> JSONResponse:
    return JSONResponse(wire.hold_to_wire(result), headers=REPLAYED if result.replayed else None)


def _close_answer(result: CloseResult) -> JSONResponse:
    return JSONResponse(wire.settle_to_wire(result), headers=REPLAYED if result.replayed else None)


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    router.include_router(_server_api(runtime))
    router.include_router(_client_protocol(runtime))
    return router


def _server_api(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.post(
        "/customers/{external_id}/reservations",
        response_model=wire.HoldOut,
        summary="Hold usage for a customer (created if new) until settled or released",
    )
    def hold(
        external_id: str,
        body: requests.HoldRequest,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        result = service.hold(
            ctx,
            app_of(request),
            external(external_id),
            body.id,
            body.value,
            ttl_seconds=body.ttl_seconds,
            access_source_id=body.access_source_id,
            idempotency_key=idempotency_key,
            create_customer=True,
        )
        return _hold_answer(result)

    @router.post(
        "/reservations/{reservation_id}/settle",
        response_model=wire.SettleOut,
        summary="Consume the actual amount of a hold; the rest goes back",
    )
    def settle(reservation_id: str, body: requests.SettleRequest, request: Request) -> JSONResponse:
        return _close_answer(
            service.settle_reservation(ctx, app_of(request), reservation_id, body.value)
        )

    @router.post(
        "/reservations/{reservation_id}/release",
        response_model=wire.SettleOut,
        summary="Give a whole hold back",
    )
    def release(reservation_id: str, request: Request) -> JSONResponse:
        return _close_answer(service.release_reservation(ctx, app_of(request), reservation_id))

    @router.get(
        "/reservations/{reservation_id}",
        response_model=wire.ReservationOut,
        summary="A reservation's state and amounts",
    )
    def show(reservation_id: str, request: Request) -> JSONResponse:
        row = service.get_reservation(ctx, app_of(request), reservation_id)
        return JSONResponse(wire.reservation_to_wire(row))

    return router


def _client_protocol(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["client protocol"], responses=ERRORS)
    ctx = runtime.ctx

    @router.post(
        "/v1/customer/reservations",
        response_model=wire.HoldOut,
        summary="Hold usage of an entitlement or usage key (our extension)",
    )
    def hold(
        body: requests.ClientHoldRequest, request: Request, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        result = service.hold(
            ctx,
            app_id,
            CustomerRef.internal(body.client_id),
            body.entitlement_id,
            body.value,
            ttl_seconds=body.ttl_seconds,
            access_source_id=body.access_source_id,
            idempotency_key=idempotency_key,
            id_field="entitlement_id",
        )
        return _hold_answer(result)

    @router.post(
        "/v1/customer/reservations/{reservation_id}/settle",
        response_model=wire.SettleOut,
        summary="Settle one's own hold (our extension)",
    )
    def settle(
        reservation_id: str, body: requests.ClientSettleRequest, request: Request
    ) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        owner = CustomerRef.internal(body.client_id)
        return _close_answer(
            service.settle_reservation(ctx, app_id, reservation_id, body.value, owner=owner)
        )

    @router.post(
        "/v1/customer/reservations/{reservation_id}/release",
        response_model=wire.SettleOut,
        summary="Release one's own hold (our extension)",
    )
    def release(
        reservation_id: str, body: requests.ClientReleaseRequest, request: Request
    ) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        owner = CustomerRef.internal(body.client_id)
        return _close_answer(service.release_reservation(ctx, app_id, reservation_id, owner=owner))

    @router.get(
        "/v1/customer/reservations/{reservation_id}",
        response_model=wire.ReservationOut,
        summary="One's own reservation (our extension)",
    )
    def show(
        reservation_id: str,
        request: Request,
        client_id: str = Query(min_length=1, max_length=64),
    ) -> JSONResponse:
        app_id = runtime.customer_app_id(request, client_id)
        owner = CustomerRef.internal(client_id)
        row = service.get_reservation(ctx, app_id, reservation_id, owner=owner)
        return JSONResponse(wire.reservation_to_wire(row))

    return router
