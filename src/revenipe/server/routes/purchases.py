"""The client protocol's purchases (docs/concepts/client-protocol.md#endpoints): start
one, cancel or uncancel a subscription, change plan, attach a payment method to a trial.
The same authentication as the rest of the client protocol (app id, customer token).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from revenipe.server import requests
from revenipe.server.routes.common import ERRORS
from revenipe.server.runtime import Runtime
from revenipe.services.purchases import orders as purchase_service
from revenipe.services.purchases.vocabulary import PurchaseRequest
from revenipe.wire import purchases as purchase_wire


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["client protocol"], responses=ERRORS)

    def base_url(request: Request) -> str:
        return runtime.settings.public_url or str(request.base_url)

    @router.post(
        "/v1/customer/purchase/start_purchase",
        response_model=purchase_wire.StartPurchaseOut,
        summary="Start a purchase",
    )
    def start_purchase(body: requests.StartPurchaseRequest, request: Request) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.customer_id)
        started = purchase_service.start_purchase(
            runtime.ctx,
            app_id,
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
        return JSONResponse(purchase_wire.started_purchase_to_wire(started))

    @router.post(
        "/v1/customer/purchase/subscription/cancel",
        response_model=purchase_wire.CancelOut,
        summary="Cancel a subscription",
    )
    def cancel(body: requests.CancelRequest, request: Request) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        outcome = purchase_service.cancel_subscription(
            runtime.ctx, app_id, body.client_id, body.source_id, body.cancel_mode
        )
        return JSONResponse(purchase_wire.cancel_to_wire(outcome))

    @router.post(
        "/v1/customer/purchase/subscription/uncancel",
        response_model=purchase_wire.UncancelOut,
        summary="Undo a scheduled cancel",
    )
    def uncancel(body: requests.UncancelRequest, request: Request) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        purchase_service.uncancel_subscription(runtime.ctx, app_id, body.client_id, body.source_id)
        return JSONResponse(purchase_wire.uncancel_to_wire())

    @router.post(
        "/v1/customer/purchase/subscription/change_plan",
        response_model=purchase_wire.ChangePlanOut,
        summary="Change plan",
    )
    def change_plan(body: requests.ChangePlanRequest, request: Request) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        outcome = purchase_service.change_plan(
            runtime.ctx, app_id, body.client_id, body.source_id, body.new_product_id
        )
        return JSONResponse(purchase_wire.plan_change_to_wire(outcome))

    @router.post(
        "/v1/customer/purchase/subscriptions/attach/payment_method",
        response_model=purchase_wire.AttachPaymentMethodOut,
        summary="Attach a payment method to a trial",
    )
    def attach(body: requests.AttachPaymentMethodRequest, request: Request) -> JSONResponse:
        app_id = runtime.customer_app_id(request, body.client_id)
        outcome = purchase_service.attach_payment_method(
            runtime.ctx,
            app_id,
            body.client_id,
            body.access_source_id,
            body.mode,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            public_base_url=base_url(request),
        )
        return JSONResponse(purchase_wire.attach_to_wire(outcome))

    return router
