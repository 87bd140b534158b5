"""The dashboard application, mounted by the server at /dashboard (docs/adr/0020).

Its own FastAPI app, so that its errors are pages rather than JSON: signing in is a
redirect, a refused CSRF token a 403 page, a business error a page with its message.
Every answer carries headers that keep pages out of caches, frames and referrers, and
a Content-Security-Policy that lets only our own stylesheet and script run.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from revenipe.dashboard import auth
from revenipe.dashboard.pages import (
    analytics,
    catalog,
    customers,
    home,
    overview,
    settings,
    sign_in,
)
from revenipe.dashboard.rendering import PREFIX, render
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services.context import ServiceContext

__all__ = ["PREFIX", "create_dashboard"]

_STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_NOT_FOUND = {
    ErrorCode.APP_NOT_FOUND,
    ErrorCode.CUSTOMER_NOT_FOUND,
    ErrorCode.USAGE_EVENT_NOT_FOUND,
    ErrorCode.ACCESS_SOURCE_NOT_FOUND,
    ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND,
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds `_HEADERS` to every answer, and `Cache-Control: no-store` to every page
    (pages show balances and secrets; static files set their own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in _HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


@lru_cache(maxsize=len(_STATIC))
def _static_file(name: str) -> bytes:
    return resources.files("revenipe.dashboard").joinpath("static", name).read_bytes()


def create_dashboard(ctx: ServiceContext) -> FastAPI:
    """The dashboard's pages over `ctx`, to be mounted at `PREFIX`."""
    dashboard = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_pages(dashboard)
    dashboard.add_middleware(SecurityHeaders)

    @dashboard.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        media_type = _STATIC.get(name)
        if media_type is None:
            return Response("not found", 404, media_type="text/plain")
        return Response(
            _static_file(name),
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=3600"},
        )

    for pages in (sign_in, home, overview, customers, analytics, catalog, settings):
        dashboard.include_router(pages.build_router(ctx))
    return dashboard


def _install_error_pages(dashboard: FastAPI) -> None:
    @dashboard.exception_handler(auth.SignInRequired)
    async def _sign_in(_: Request, exc: auth.SignInRequired) -> Response:
        return RedirectResponse(f"{PREFIX}/sign-in?next={quote(exc.back_to, safe='/')}", 303)

    @dashboard.exception_handler(auth.CsrfRefused)
    async def _csrf(_: Request, exc: auth.CsrfRefused) -> Response:
        return _error_page(
            403,
            "Refused",
            "This form was not sent from a dashboard page of this session (its CSRF token "
            "is missing or wrong). Reload the page and try again.",
        )

    @dashboard.exception_handler(RevenipeError)
    async def _business(_: Request, exc: RevenipeError) -> Response:
        if exc.code in _NOT_FOUND:
            return _error_page(404, "Not found", exc.message)
        if exc.code in (ErrorCode.DATABASE_BUSY, ErrorCode.DATABASE_UNAVAILABLE):
            return _error_page(503, "Try again", exc.message, headers={"Retry-After": "1"})
        return _error_page(400, "Cannot do that", exc.message)

    @dashboard.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return _error_page(400, "Bad request", "The request's parameters are malformed.")

    @dashboard.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error_page(404, "Not found", "There is no dashboard page here.")
        if exc.status_code == 405:
            return _error_page(405, "Not allowed", "This address does not take that method.")
        return _error_page(exc.status_code, "Error", str(exc.detail))


def _error_page(
    status: int, title: str, message: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return render(
        "error.html",
        status=status,
        headers=headers,
        title=title,
        message=message,
        status_code=status,
    )
