"""RevenueCat's HTTP edges: the app's RevenueCat settings (server API, secret key) and
RevenueCat's webhook endpoint (authorized by the value the app configured, no key).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, StrictStr
from starlette.concurrency import run_in_threadpool

from revenipe.server.requests import ApiRequest
from revenipe.server.routes.common import ERRORS, secret_key_app
from revenipe.server.runtime import Runtime
from revenipe.services.purchases.revenuecat import settings as revenuecat_settings
from revenipe.services.purchases.revenuecat import webhooks as revenuecat_webhooks
from revenipe.services.purchases.revenuecat.settings import MAX_AUTHORIZATION_LENGTH
from revenipe.wire import providers as wire

WEBHOOK_PREFIX = "/v1/webhooks/revenuecat/"
AppIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class RevenueCatSettingsUpdate(ApiRequest):
    authorization: Annotated[StrictStr, Field(max_length=MAX_AUTHORIZATION_LENGTH)] = Field(
        description="The value RevenueCat sends in the Authorization header of this app's "
        "webhook (its dashboard's 'Authorization header value'). Never shown back."
    )


def _settings_out(
    status: revenuecat_settings.RevenueCatStatus, request: Request
) -> wire.RevenueCatSettingsOut:
    return wire.revenuecat_settings_to_wire(status, str(request.base_url))


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(responses=ERRORS)
    ctx = runtime.ctx

    app_of = secret_key_app(runtime)

    @router.get(
        "/v1/providers/revenuecat",
        tags=["server API"],
        response_model=wire.RevenueCatSettingsOut,
        summary="The app's RevenueCat settings (whether set; never the authorization)",
    )
    def get_revenuecat(request: Request) -> JSONResponse:
        status = revenuecat_settings.status(ctx, app_of(request))
        return JSONResponse(_settings_out(status, request))

    @router.put(
        "/v1/providers/revenuecat",
        tags=["server API"],
        response_model=wire.RevenueCatSettingsOut,
        summary="Set the authorization RevenueCat sends with the app's webhook (live apps)",
    )
    def put_revenuecat(body: RevenueCatSettingsUpdate, request: Request) -> JSONResponse:
        status = revenuecat_settings.configure(
            ctx, app_of(request), authorization=body.authorization
        )
        return JSONResponse(_settings_out(status, request))

    @router.delete(
        "/v1/providers/revenuecat",
        tags=["server API"],
        status_code=204,
        response_class=Response,
        summary="Forget the app's RevenueCat settings (its events are refused until set again)",
    )
    def delete_revenuecat(request: Request) -> Response:
        revenuecat_settings.remove(ctx, app_of(request))
        return Response(status_code=204)

    @router.post(
        WEBHOOK_PREFIX + "{app_id}",
        tags=["webhooks"],
        response_model=wire.WebhookReceived,
        summary="RevenueCat's events for one app (authorized by the app's configured value)",
    )
    async def revenuecat_webhook(
        app_id: AppIdPath,
        request: Request,
        authorization: Annotated[str | None, Header(max_length=MAX_AUTHORIZATION_LENGTH)] = None,
    ) -> JSONResponse:
        payload = await request.body()
        received = await run_in_threadpool(
            revenuecat_webhooks.receive, ctx, app_id, payload, authorization
        )
        return JSONResponse(wire.webhook_received_to_wire(received))

    return router
