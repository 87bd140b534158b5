"""Stripe's HTTP edges: the app's Stripe settings (server API, secret key), Stripe's
webhook endpoint (signed by Stripe, no key), and the page a Checkout returns to when
the client gave no success URL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import Field, StrictStr
from starlette.concurrency import run_in_threadpool

from revenipe.server.requests import ApiRequest
from revenipe.server.routes.common import ERRORS, secret_key_app
from revenipe.server.runtime import Runtime
from revenipe.services.purchases.stripe import settings as stripe_settings
from revenipe.services.purchases.stripe import webhooks as stripe_webhooks
from revenipe.services.purchases.stripe.billing import COMPLETE_PATH
from revenipe.wire import providers as wire

WEBHOOK_PREFIX = "/v1/webhooks/stripe/"
AppIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class StripeSettingsUpdate(ApiRequest):
    """Either or both; what is left out is kept. Never shown back."""

    secret_key: Annotated[StrictStr, Field(max_length=255)] | None = Field(
        None, description="sk_test_..., sk_live_..., or a restricted key rk_..."
    )
    webhook_secret: Annotated[StrictStr, Field(max_length=255)] | None = Field(
        None, description="The webhook endpoint's signing secret, whsec_..."
    )


def _settings_out(status: stripe_settings.StripeStatus, request: Request) -> wire.StripeSettingsOut:
    return wire.stripe_settings_to_wire(status, str(request.base_url))


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(responses=ERRORS)
    ctx = runtime.ctx

    app_of = secret_key_app(runtime)

    @router.get(
        "/v1/providers/stripe",
        tags=["server API"],
        response_model=wire.StripeSettingsOut,
        summary="The app's Stripe settings (whether set; never the secrets)",
    )
    def get_stripe(request: Request) -> JSONResponse:
        return JSONResponse(_settings_out(stripe_settings.status(ctx, app_of(request)), request))

    @router.put(
        "/v1/providers/stripe",
        tags=["server API"],
        response_model=wire.StripeSettingsOut,
        summary="Set the app's Stripe secret key and webhook secret (live apps)",
    )
    def put_stripe(body: StripeSettingsUpdate, request: Request) -> JSONResponse:
        status = stripe_settings.configure(
            ctx,
            app_of(request),
            secret_key=body.secret_key,
            webhook_secret=body.webhook_secret,
        )
        return JSONResponse(_settings_out(status, request))

    @router.delete(
        "/v1/providers/stripe",
        tags=["server API"],
        status_code=204,
        summary="Forget the app's Stripe settings (it sells nothing until set again)",
    )
    def delete_stripe(request: Request) -> Response:
        stripe_settings.remove(ctx, app_of(request))
        return Response(status_code=204)

    @router.post(
        WEBHOOK_PREFIX + "{app_id}",
        tags=["webhooks"],
        response_model=wire.WebhookReceived,
        summary="Stripe's events for one app (signed with its webhook secret)",
    )
    async def stripe_webhook(
        app_id: AppIdPath,
        request: Request,
        stripe_signature: Annotated[str | None, Header(max_length=2048)] = None,
    ) -> JSONResponse:
        # The signature covers the raw bytes: read them before anything parses them.
        payload = await request.body()
        received = await run_in_threadpool(
            stripe_webhooks.receive, ctx, app_id, payload, stripe_signature
        )
        return JSONResponse(wire.webhook_received_to_wire(received))

    @router.get(COMPLETE_PATH, include_in_schema=False)
    def checkout_complete() -> HTMLResponse:
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Payment received</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            "<body><h1>Thank you</h1><p>Your purchase is being confirmed; you can close "
            "this page and return to the app.</p></body></html>",
            headers={"Cache-Control": "no-store"},
        )

    return router
