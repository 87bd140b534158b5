"""Server API: the app's settings (token policy) and its secret keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from revenipe.server.requests import AppSettingsUpdate
from revenipe.server.routes.common import secret_key_app, server_api_router
from revenipe.server.runtime import Runtime
from revenipe.services import apps as app_service
from revenipe.wire import apps as wire

KeyId = Annotated[str, Path(max_length=64, pattern=r"^key_[0-9a-f]{1,40}$")]


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)

    @router.get("/app", response_model=wire.AppSettingsOut, summary="App settings")
    def get_app(request: Request) -> JSONResponse:
        return JSONResponse(wire.app_settings_to_wire(app_service.get_app(ctx, app_of(request))))

    @router.patch(
        "/app",
        response_model=wire.AppSettingsOut,
        summary="Change app settings (token policy, purchase return URLs)",
    )
    def update_app(body: AppSettingsUpdate, request: Request) -> JSONResponse:
        app_id = app_of(request)
        if body.return_urls is not None:
            # Checked (and stored) first: a bad list changes nothing, the policy neither.
            app = app_service.set_return_urls(ctx, app_id, body.return_urls)
        if body.token_policy is not None:
            app = app_service.set_token_policy(ctx, app_id, body.token_policy)
        if body.token_policy is None and body.return_urls is None:
            app = app_service.get_app(ctx, app_id)
        runtime.app_cache.forget(app_id)
        return JSONResponse(wire.app_settings_to_wire(app))

    @router.get(
        "/secret_keys",
        response_model=wire.SecretKeyList,
        summary="The app's secret keys (ids only)",
    )
    def list_keys(request: Request) -> JSONResponse:
        keys = app_service.list_secret_keys(ctx, app_of(request))
        return JSONResponse(wire.secret_key_list_to_wire(keys))

    @router.post(
        "/secret_keys",
        response_model=wire.SecretKeyOut,
        status_code=201,
        summary="Create a secret key (shown once)",
    )
    def create_key(request: Request) -> JSONResponse:
        key_id, key = app_service.create_secret_key(ctx, app_of(request))
        return JSONResponse(wire.secret_key_to_wire(key_id, key), 201)

    @router.delete("/secret_keys/{key_id}", status_code=204, summary="Revoke a secret key")
    def revoke_key(key_id: KeyId, request: Request) -> Response:
        app_service.revoke_secret_key(ctx, app_of(request), key_id)
        runtime.secret_keys.forget_all()
        return Response(status_code=204)

    return router
