"""The Revenipe client protocol (docs/concepts/client-protocol.md#endpoints), served
unchanged.

Paths, field names and types are exactly the published protocol's. Our extensions
(docs/concepts/client-protocol.md#our-extensions) travel in headers only:
`X-Revenipe-Customer-Token` (required under the `enforce` policy) and `Idempotency-Key`
on track. Here: login, refresh, track and the app's products; the purchase routes are
`purchases`'.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from revenipe.engine.errors import RevenipeError
from revenipe.server import requests
from revenipe.server.routes.common import ERRORS, IdempotencyKey
from revenipe.server.runtime import Runtime
from revenipe.server.security import CUSTOMER_TOKEN_HEADER, ClientAccess
from revenipe.services import catalogs as catalog_service
from revenipe.services import customers as customer_service
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef
from revenipe.services.tokens import DEFAULT_TOKEN_TTL_SECONDS, issue_token
from revenipe.services.usage import track as usage_service
from revenipe.storage import customers as customer_store
from revenipe.wire import catalog as catalog_wire
from revenipe.wire import customers as customer_wire
from revenipe.wire import usage as usage_wire

ANONYMOUS_ID = re.compile(r"^[0-9a-f]{32}$")


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["client protocol"], responses=ERRORS)

    def access(request: Request) -> ClientAccess:
        return runtime.client_access(request)

    @router.post(
        "/v1/client/auth",
        response_model=customer_wire.Customer,
        summary="Log a customer in (created if new)",
    )
    def login(body: requests.AuthRequest, request: Request) -> JSONResponse:
        who = access(request)
        ctx = runtime.ctx
        external_id = body.client_id
        headers: dict[str, str] = {}
        anonymous = bool(ANONYMOUS_ID.match(external_id))
        if anonymous and who.claims is None:
            runtime.limit_anonymous_login(who.app.id, request)
        if who.claims is not None:
            customer = _token_holder(ctx, who, external_id)
        elif who.enforced:
            customer = _anonymous_customer(ctx, who, external_id, anonymous)
            minted = issue_token(who.app, customer.id, _after(ctx.now(), DEFAULT_TOKEN_TTL_SECONDS))
            headers[CUSTOMER_TOKEN_HEADER] = minted.token
        else:
            customer = customer_service.ensure_customer(
                ctx, who.app.id, external_id, anonymous=anonymous
            )
        state = customer_service.customer_state(ctx, who.app.id, CustomerRef.internal(customer.id))
        return JSONResponse(customer_wire.customer_to_wire(state), headers=headers)

    @router.post(
        "/v1/customer/refresh_entitlements",
        response_model=customer_wire.Refresh,
        summary="Reload a customer's access state",
    )
    def refresh(body: requests.RefreshRequest, request: Request) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        state = customer_service.customer_state(
            runtime.ctx, app_id, CustomerRef.internal(body.client_id)
        )
        return JSONResponse(customer_wire.entitlements_to_wire(state))

    @router.post(
        "/v1/customer/track",
        response_model=usage_wire.TrackResultOut,
        summary="Consume usage of an entitlement or usage key",
    )
    def track(
        body: requests.TrackRequest, request: Request, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        result = usage_service.track(
            runtime.ctx,
            app_id,
            CustomerRef.internal(body.client_id),
            body.entitlement_id,
            body.value,
            access_source_id=body.access_source_id,
            idempotency_key=idempotency_key,
            id_field="entitlement_id",
        )
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return JSONResponse(usage_wire.track_result_to_wire(result), headers=headers)

    @router.get(
        "/v1/customer/app/products",
        response_model=catalog_wire.Products,
        summary="The app's products",
    )
    def products(request: Request) -> JSONResponse:
        who = access(request)
        _, catalog = catalog_service.get_catalog(runtime.ctx, who.app.id)
        return JSONResponse(catalog_wire.products_to_wire(catalog))

    return router


def _token_holder(
    ctx: ServiceContext, who: ClientAccess, external_id: str
) -> customer_store.CustomerRow:
    """A login with a customer token: only as the token's own customer, who must exist."""
    try:
        customer = customer_service.find_customer(
            ctx, who.app.id, CustomerRef.external(external_id)
        )
    except RevenipeError:
        who.require_customer("")  # raises: same answer as for another customer
        raise
    who.require_customer(customer.id)
    return customer


def _anonymous_customer(
    ctx: ServiceContext, who: ClientAccess, external_id: str, anonymous: bool
) -> customer_store.CustomerRow:
    """A login without a token under the `enforce` policy: anonymous customers only (they
    get a token with the answer)."""
    if not anonymous:
        who.require_customer("")  # raises: a token is required
    customer = customer_service.ensure_customer(ctx, who.app.id, external_id, anonymous=True)
    if not customer.anonymous:
        who.require_customer(customer.id)  # raises: not an anonymous customer
    return customer


def _after(moment: datetime, seconds: int) -> datetime:
    return moment + timedelta(seconds=seconds)
