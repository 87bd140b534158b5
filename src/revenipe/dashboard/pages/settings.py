"""Settings of an app: secret keys (created and shown once, revoked), the token policy,
payment providers (what is configured; the sandbox clock), webhook endpoints with their
deliveries; and the operator's own time zone. Each action is the service the API or
the CLI calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from revenipe.dashboard import auth
from revenipe.dashboard.page import Page, app_page, show
from revenipe.dashboard.paging import page_links, split_page
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services import apps as app_service
from revenipe.services import operators as operator_service
from revenipe.services.context import ServiceContext
from revenipe.services.outbound import endpoints as endpoint_service
from revenipe.services.purchases.revenuecat import settings as revenuecat_settings
from revenipe.services.purchases.sandbox import clock as clock_service
from revenipe.services.purchases.stripe import settings as stripe_settings

Field = Annotated[str, Form()]
DELIVERIES_PAGE = 25


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _pages(router, ctx)
    _key_actions(router, ctx)
    _other_actions(router, ctx)
    return router


def _settings_page(
    ctx: ServiceContext, request: Request, app_id: str, *, new_key: tuple[str, str] | None = None
) -> Response:
    page = app_page(ctx, request, app_id, section="settings", title="Settings")
    app = page.app
    if app is None:  # app_page always sets it
        raise RevenipeError(ErrorCode.APP_NOT_FOUND, "this server has no such app")
    return show(
        "settings.html",
        page,
        keys=sorted(
            app_service.list_secret_keys(ctx, app_id), key=lambda k: k.created_at, reverse=True
        ),
        new_key=new_key,
        stripe=stripe_settings.status(ctx, app_id),
        revenuecat=revenuecat_settings.status(ctx, app_id),
        clock=clock_service.clock(ctx, app_id) if app.sandbox else None,
        endpoints=endpoint_service.list_endpoints(ctx, app_id),
        time_zones=operator_service.time_zone_names(),
    )


def _pages(router: APIRouter, ctx: ServiceContext) -> None:
    @router.get("/apps/{app_id}/settings")
    def settings(request: Request, app_id: str) -> Response:
        return _settings_page(ctx, request, app_id)

    @router.get("/apps/{app_id}/settings/webhooks/{endpoint_id}")
    def deliveries(request: Request, app_id: str, endpoint_id: str, before: str = "") -> Response:
        page = app_page(ctx, request, app_id, section="settings", title="Webhook deliveries")
        endpoint = endpoint_service.get_endpoint(ctx, app_id, endpoint_id)
        rows = endpoint_service.list_deliveries(
            ctx, app_id, endpoint_id, before_id=before or None, limit=DELIVERIES_PAGE + 1
        )
        shown, more = split_page(rows, DELIVERIES_PAGE)
        links = page_links(
            page.url(f"settings/webhooks/{endpoint_id}"),
            {},
            after=before or None,
            last_key=shown[-1].delivery.id if shown else None,
            more=more,
            cursor="before",
        )
        return show("webhook_deliveries.html", page, endpoint=endpoint, views=shown, links=links)


def _key_actions(router: APIRouter, ctx: ServiceContext) -> None:
    @router.post("/apps/{app_id}/settings/keys")
    def create_key(request: Request, app_id: str, csrf_token: Field = "") -> Response:
        auth.require_csrf(ctx, request, csrf_token)
        key_id, secret_key = app_service.create_secret_key(ctx, app_id)
        # Shown once, in this answer only (never in a cookie or a URL).
        return _settings_page(ctx, request, app_id, new_key=(key_id, secret_key))

    @router.post("/apps/{app_id}/settings/keys/{key_id}/revoke")
    def revoke_key(request: Request, app_id: str, key_id: str, csrf_token: Field = "") -> Response:
        auth.require_csrf(ctx, request, csrf_token)
        return _act(ctx, app_id, lambda: _revoke(ctx, app_id, key_id))


def _revoke(ctx: ServiceContext, app_id: str, key_id: str) -> str:
    app_service.revoke_secret_key(ctx, app_id, key_id)
    return f"Secret key {key_id} revoked: requests with it are refused from now on."


def _other_actions(router: APIRouter, ctx: ServiceContext) -> None:
    @router.post("/apps/{app_id}/settings/token-policy")
    def token_policy(
        request: Request, app_id: str, token_policy: Field = "", csrf_token: Field = ""
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            app = app_service.set_token_policy(ctx, app_id, token_policy)
            return f"Token policy set to {app.token_policy}."

        return _act(ctx, app_id, act)

    @router.post("/apps/{app_id}/settings/clock")
    def advance_clock(
        request: Request, app_id: str, days: Field = "0", hours: Field = "0", csrf_token: Field = ""
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            seconds = _whole(days, "days") * 86_400 + _whole(hours, "hours") * 3_600
            state = clock_service.advance_clock(ctx, app_id, seconds)
            return (
                "Sandbox clock moved forward; the app's time is now "
                f"{state.now:%Y-%m-%d %H:%M} UTC."
            )

        return _act(ctx, app_id, act)

    @router.post("/apps/{app_id}/settings/time-zone")
    def time_zone(
        request: Request, app_id: str, time_zone: Field = "", csrf_token: Field = ""
    ) -> Response:
        signed = auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            operator_service.set_time_zone(ctx, signed.operator.id, time_zone)
            return f"Times are shown in {time_zone} from now on."

        return _act(ctx, app_id, act)


def _act(ctx: ServiceContext, app_id: str, act: Callable[[], str]) -> Response:
    """Run an action; back to the settings with what it did, or why not."""
    back = f"{Page.app_url_of(app_id)}/settings"
    try:
        done = act()
    except RevenipeError as error:
        return auth.redirect(back, flash=error.message, error=True)
    return auth.redirect(back, flash=done)


def _whole(text: str, field: str) -> int:
    try:
        value = int(text.strip() or "0")
    except ValueError:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be a whole number", field=field
        ) from None
    if value < 0:
        raise RevenipeError(ErrorCode.INVALID_ARGUMENT, f"{field} cannot be negative", field=field)
    return value
