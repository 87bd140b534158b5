"""Server API: customers (list, state), grants and customer tokens. Customers are named
by the app's external id in paths (URL-encoded)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.server.requests import GrantRequest, TokenRequest
from revenipe.server.routes.common import (
    Cursor,
    Limit,
    external,
    parse_time,
    secret_key_app,
    server_api_router,
)
from revenipe.server.runtime import Runtime
from revenipe.services import customers as customer_service
from revenipe.services import tokens as token_service
from revenipe.services.context import ServiceContext
from revenipe.services.customers import GrantedSource
from revenipe.wire import customers as wire


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.get("/customers", response_model=wire.CustomerList, summary="List customers")
    def list_customers(request: Request, cursor: Cursor = None, limit: Limit = 100) -> JSONResponse:
        rows = customer_service.list_customers(ctx, app_of(request), after_id=cursor, limit=limit)
        return JSONResponse(wire.customer_list_to_wire(rows, limit))

    @router.get(
        "/customers/{external_id}", response_model=wire.ApiCustomer, summary="A customer's state"
    )
    def get_customer(external_id: str, request: Request) -> JSONResponse:
        state = customer_service.customer_state(ctx, app_of(request), external(external_id))
        return JSONResponse(wire.api_customer_to_wire(state, external_id))

    @router.post(
        "/customers/{external_id}/grants",
        response_model=wire.GrantOut,
        status_code=201,
        summary="Grant a product or an entitlement amount",
    )
    def grant(external_id: str, body: GrantRequest, request: Request) -> JSONResponse:
        granted = _grant(ctx, app_of(request), external_id, body)
        return JSONResponse(wire.grant_to_wire(granted), 201)

    @router.post(
        "/customers/{external_id}/tokens",
        response_model=wire.TokenOut,
        status_code=201,
        summary="Mint a customer token (created if new)",
    )
    def mint_token(
        external_id: str, request: Request, body: TokenRequest | None = None
    ) -> JSONResponse:
        minted = token_service.mint_customer_token(
            ctx, app_of(request), external_id, body.ttl_seconds if body else None
        )
        return JSONResponse(wire.token_to_wire(minted), 201)

    return router


def _grant(ctx: ServiceContext, app_id: str, external_id: str, body: GrantRequest) -> GrantedSource:
    """Exactly one of a product or an entitlement (with its amount)."""
    expires_at = parse_time(body.expires_at, "expires_at")
    if (body.product_id is None) == (body.entitlement_id is None):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, "give exactly one of product_id, entitlement_id"
        )
    if body.product_id is not None:
        if body.amount is not None:
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT,
                "amount goes with entitlement_id, not product_id",
                field="amount",
            )
        return customer_service.grant_product(
            ctx,
            app_id,
            external(external_id),
            body.product_id,
            expires_at=expires_at,
            priority=body.priority,
        )
    if body.entitlement_id is None:
        raise InvariantViolation("a grant body names a product or an entitlement (validated)")
    return customer_service.grant_entitlement(
        ctx,
        app_id,
        external(external_id),
        body.entitlement_id,
        body.amount,
        expires_at=expires_at,
        priority=body.priority,
    )
