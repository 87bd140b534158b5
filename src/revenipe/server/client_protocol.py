"""The Revenipe client protocol (reference/client-protocol.md), served unchanged.

Paths, field names and types are exactly the reference's. Our extensions travel in
headers only: `X-Revenipe-Customer-Token` (required under the `enforce` policy) and
`Idempotency-Key` on track.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from revenipe.engine.errors import RevenipeError
from revenipe.server import schemas
from revenipe.server.runtime import Runtime
from revenipe.server.security import CUSTOMER_TOKEN_HEADER, ClientAccess
from revenipe.services import catalogs as catalog_service
from revenipe.services import customers as customer_service
from revenipe.services.customers import CustomerRef
from revenipe.services.purchases import orders as purchase_service
from revenipe.services.purchases.vocabulary import PurchaseRequest
from revenipe.services.tokens import DEFAULT_TOKEN_TTL_SECONDS, issue_token
from revenipe.services.usage import track as usage_service
from revenipe.wire import (
    attach_to_wire,
    cancel_to_wire,
    customer_to_wire,
    entitlements_to_wire,
    plan_change_to_wire,
    product_to_wire,
    started_purchase_to_wire,
)

ANONYMOUS_ID = re.compile(r"^[0-9a-f]{32}$")
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorOut} for status in (400, 401, 403, 404, 409, 413, 429, 502, 503)
}
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["client protocol"], responses=ERRORS)

    def access(request: Request) -> ClientAccess:
        return runtime.client_access(request)

    @router.post(
        "/v1/client/auth",
        response_model=schemas.Customer,
        summary="Log a customer in (created if new)",
    )
    def login(body: schemas.AuthRequest, request: Request) -> JSONResponse:
        who = access(request)
        ctx = runtime.ctx
        external_id = body.client_id
        headers: dict[str, str] = {}
        anonymous = bool(ANONYMOUS_ID.match(external_id))
        if anonymous and who.claims is None:
            runtime.limit_anonymous_login(who.app.id, request)
        if who.claims is not None:
            try:
                customer = customer_service.find_customer(
                    ctx, who.app.id, CustomerRef.external(external_id)
                )
            except RevenipeError:
                who.require_customer("")  # raises: same answer as for another customer
                raise
            who.require_customer(customer.id)
        elif who.enforced:
            if not anonymous:
                who.require_customer("")  # raises: a token is required
            customer = customer_service.ensure_customer(
                ctx, who.app.id, external_id, anonymous=True
            )
            if not customer.anonymous:
                who.require_customer(customer.id)  # raises: not an anonymous customer
            minted = issue_token(who.app, customer.id, _after(ctx.now(), DEFAULT_TOKEN_TTL_SECONDS))
            headers[CUSTOMER_TOKEN_HEADER] = minted.token
        else:
            customer = customer_service.ensure_customer(
                ctx, who.app.id, external_id, anonymous=anonymous
            )
        state = customer_service.customer_state(ctx, who.app.id, CustomerRef.internal(customer.id))
        return JSONResponse(customer_to_wire(state), headers=headers)

    @router.post(
        "/v1/customer/refresh_entitlements",
        response_model=schemas.Refresh,
        summary="Reload a customer's access state",
    )
    def refresh(body: schemas.RefreshRequest, request: Request) -> JSONResponse:
        who = access(request)
        who.require_customer(body.client_id)
        state = customer_service.customer_state(
            runtime.ctx, who.app.id, CustomerRef.internal(body.client_id)
        )
        return JSONResponse(entitlements_to_wire(state))

    @router.post(
        "/v1/customer/track",
        response_model=schemas.TrackResultOut,
        summary="Consume usage of an entitlement or usage key",
    )
    def track(
        body: schemas.TrackRequest, request: Request, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        who = access(request)
        who.require_customer(body.client_id)
        result = usage_service.track(
            runtime.ctx,
            who.app.id,
            CustomerRef.internal(body.client_id),
            body.entitlement_id,
            body.value,
            access_source_id=body.access_source_id,
            idempotency_key=idempotency_key,
        )
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return JSONResponse(result.to_wire(), headers=headers)

    @router.get(
        "/v1/customer/app/products", response_model=schemas.Products, summary="The app's products"
    )
    def products(request: Request) -> JSONResponse:
        who = access(request)
        _, catalog = catalog_service.get_catalog(runtime.ctx, who.app.id)
        return JSONResponse({"products": [product_to_wire(p, catalog) for p in catalog.products]})

    def base_url(request: Request) -> str:
        return runtime.settings.public_url or str(request.base_url)

    @router.post(
        "/v1/customer/purchase/start_purchase",
        response_model=schemas.StartPurchaseOut,
        summary="Start a purchase",
    )
    def start_purchase(body: schemas.StartPurchaseRequest, request: Request) -> JSONResponse:
        who = access(request)
        who.require_customer(body.customer_id)
        started = purchase_service.start_purchase(
            runtime.ctx,
            who.app.id,
            body.customer_id,
            PurchaseRequest(
                product_id=body.product_id,
                purchase_method=body.purchase_method,
                trial_payment_method_behavior=body.trial_payment_method_behavior,
                success_url=body.success_url,
                cancel_url=body.cancel_url,
                extra_params=body.extra_params,
            ),
            public_base_url=base_url(request),
        )
        return JSONResponse(started_purchase_to_wire(started))

    @router.post(
        "/v1/customer/purchase/subscription/cancel",
        response_model=schemas.CancelOut,
        summary="Cancel a subscription",
    )
    def cancel(body: schemas.CancelRequest, request: Request) -> JSONResponse:
        who = access(request)
        who.require_customer(body.client_id)
        outcome = purchase_service.cancel_subscription(
            runtime.ctx, who.app.id, body.client_id, body.source_id, body.cancel_mode
        )
        return JSONResponse(cancel_to_wire(outcome))

    @router.post(
        "/v1/customer/purchase/subscription/uncancel",
        response_model=schemas.UncancelOut,
        summary="Undo a scheduled cancel",
    )
    def uncancel(body: schemas.UncancelRequest, request: Request) -> JSONResponse:
        who = access(request)
        who.require_customer(body.client_id)
        purchase_service.uncancel_subscription(
            runtime.ctx, who.app.id, body.client_id, body.source_id
        )
        return JSONResponse({"success": True})

    @router.post(
        "/v1/customer/purchase/subscription/change_plan",
        response_model=schemas.ChangePlanOut,
        summary="Change plan",
    )
    def change_plan(body: schemas.ChangePlanRequest, request: Request) -> JSONResponse:
        who = access(request)
        who.require_customer(body.client_id)
        outcome = purchase_service.change_plan(
            runtime.ctx, who.app.id, body.client_id, body.source_id, body.new_product_id
        )
        return JSONResponse(plan_change_to_wire(outcome))

    @router.post(
        "/v1/customer/purchase/subscriptions/attach/payment_method",
        response_model=schemas.AttachPaymentMethodOut,
        summary="Attach a payment method to a trial",
    )
    def attach(body: schemas.AttachPaymentMethodRequest, request: Request) -> JSONResponse:
        who = access(request)
        who.require_customer(body.client_id)
        outcome = purchase_service.attach_payment_method(
            runtime.ctx,
            who.app.id,
            body.client_id,
            body.access_source_id,
            body.mode,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            public_base_url=base_url(request),
        )
        return JSONResponse(attach_to_wire(outcome))

    return router


def _after(moment: datetime, seconds: int) -> datetime:
    return moment + timedelta(seconds=seconds)
