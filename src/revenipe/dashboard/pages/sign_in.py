"""Signing in (password, or a one-time link), and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from revenipe.dashboard import auth
from revenipe.dashboard.rendering import PREFIX, render
from revenipe.engine.errors import RevenipeError
from revenipe.services import operators as operator_service
from revenipe.services.context import ServiceContext
from revenipe.services.operators import SignInRefused

Field = Annotated[str, Form()]


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/sign-in")
    def sign_in_form(request: Request, next: str = "") -> Response:
        if operator_service.signed_in(ctx, auth.session_token(request)) is not None:
            return auth.redirect(auth.safe_next(next))
        return _form(request, next=next)

    @router.post("/sign-in")
    def sign_in(
        request: Request,
        email: Field = "",
        password: Field = "",
        next: Field = "",
        csrf_token: Field = "",
    ) -> Response:
        auth.check_sign_in_csrf(request, csrf_token)
        address = request.client.host if request.client else "unknown"
        try:
            session = operator_service.sign_in_with_password(ctx, email, password, address)
        except SignInRefused as refused:
            if refused.retry_after_seconds is not None:
                return _form(
                    request,
                    next=next,
                    email=email,
                    error="Too many failed sign-ins. Try again in "
                    f"{_minutes(refused.retry_after_seconds)}.",
                    status=429,
                    headers={"Retry-After": str(refused.retry_after_seconds)},
                )
            return _form(request, next=next, email=email, error=refused.message, status=401)
        response = auth.redirect(auth.safe_next(next))
        auth.set_session_cookie(request, response, session, ctx.now())
        return response

    _link_routes(router, ctx)
    _sign_out_route(router, ctx)
    return router


def _link_routes(router: APIRouter, ctx: ServiceContext) -> None:
    @router.get("/link/{token}")
    def link_form(request: Request, token: str) -> Response:
        view = operator_service.inspect_link(ctx, token)
        if view is None:
            return _dead_link()
        response = Response()
        sign_in_token = auth.new_sign_in_token(request, response)
        page = render(
            "link.html",
            title="Sign in",
            token=token,
            view=view,
            csrf_token=sign_in_token,
            time_zones=operator_service.time_zone_names(),
            error=None,
            email="",
        )
        _copy_cookies(response, page)
        return page

    @router.post("/link/{token}")
    def use_link(
        request: Request,
        token: str,
        email: Field = "",
        password: Field = "",
        time_zone: Field = "UTC",
        csrf_token: Field = "",
    ) -> Response:
        auth.check_sign_in_csrf(request, csrf_token)
        try:
            session = operator_service.sign_in_with_link(
                ctx, token, email=email, password=password, time_zone=time_zone or "UTC"
            )
        except SignInRefused:
            return _dead_link()
        except RevenipeError as error:
            view = operator_service.inspect_link(ctx, token)
            if view is None:
                return _dead_link()
            return render(
                "link.html",
                status=400,
                title="Sign in",
                token=token,
                view=view,
                csrf_token=csrf_token,
                time_zones=operator_service.time_zone_names(),
                error=error.message,
                email=email,
            )
        response = auth.redirect(PREFIX + "/")
        auth.set_session_cookie(request, response, session, ctx.now())
        return response


def _sign_out_route(router: APIRouter, ctx: ServiceContext) -> None:
    @router.post("/sign-out")
    def sign_out(request: Request, csrf_token: Field = "") -> Response:
        auth.require_csrf(ctx, request, csrf_token)
        operator_service.sign_out(ctx, auth.session_token(request))
        response = auth.redirect(PREFIX + "/sign-in", flash="Signed out.")
        auth.clear_session_cookie(request, response)
        return response


def _form(
    request: Request,
    *,
    next: str,
    email: str = "",
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    carrier = Response()
    token = auth.new_sign_in_token(request, carrier)
    flash = auth.read_flash(request)
    page = render(
        "sign_in.html",
        status=status,
        headers=headers,
        title="Sign in",
        next=next,
        email=email,
        error=error,
        notice=flash.text if flash else None,
        csrf_token=token,
    )
    _copy_cookies(carrier, page)
    if flash is not None:
        page.delete_cookie(auth.FLASH_COOKIE, path=PREFIX)
    return page


def _copy_cookies(source: Response, target: Response) -> None:
    for name, value in source.raw_headers:
        if name == b"set-cookie":
            target.raw_headers.append((name, value))


def _dead_link() -> Response:
    return render(
        "error.html",
        status=410,
        title="Link used or expired",
        status_code=410,
        message="This sign-in link was used already or has expired. Ask for a new one with "
        "`revenipe dashboard link`, or sign in with your password.",
    )


def _minutes(seconds: int) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
