"""Stripe's HTTP edges: the app's Stripe settings (server API, secret key), Stripe's
webhook endpoint (signed by Stripe, no key), and the page a Checkout returns to when
the client gave no success URL.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from revenipe.server.client_protocol import ERRORS
from revenipe.server.runtime import Runtime
from revenipe.server.schemas import ApiRequest, WebhookReceived
from revenipe.server.security import server_app_id
from revenipe.services.purchases.stripe import settings as stripe_settings
from revenipe.services.purchases.stripe import webhooks as stripe_webhooks
from revenipe.services.purchases.stripe.billing import COMPLETE_PATH

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


class StripeSettingsOut(BaseModel):
    configured: bool
    mode: str | None = Field(description="test or live: the secret key's mode")
    secret_key_last4: str | None
    webhook_secret_set: bool
    webhook_url: str = Field(description="Where Stripe should send this app's events")


def _settings_out(status: stripe_settings.StripeStatus, request: Request) -> dict[str, Any]:
    return {
        "configured": status.configured,
        "mode": status.mode,
        "secret_key_last4": status.secret_key_last4,
        "webhook_secret_set": status.webhook_secret_set,
        "webhook_url": f"{str(request.base_url).rstrip('/')}{status.webhook_path}",
    }


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(responses=ERRORS)
    ctx = runtime.ctx

    def app_of(request: Request) -> str:
        return server_app_id(request, runtime.secret_keys)

    @router.get(
        "/v1/providers/stripe",
        tags=["server API"],
        response_model=StripeSettingsOut,
        summary="The app's Stripe settings (whether set; never the secrets)",
    )
    def get_stripe(request: Request) -> JSONResponse:
        return JSONResponse(_settings_out(stripe_settings.status(ctx, app_of(request)), request))

    @router.put(
        "/v1/providers/stripe",
        tags=["server API"],
        response_model=StripeSettingsOut,
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
        response_model=WebhookReceived,
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
        return JSONResponse(
            {"received": True, "event_id": received.event_id, "outcome": received.outcome}
        )

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
