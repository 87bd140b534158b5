"""Every error answer is JSON with `code` and `message` (the client SDK shows `message`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from revenipe.catalog import CatalogError
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.wire.common import catalog_problems_to_wire, error_body

logger = logging.getLogger("revenipe.server")

STATUS_BY_CODE = {
    ErrorCode.APP_NOT_FOUND: 404,
    ErrorCode.CUSTOMER_NOT_FOUND: 404,
    ErrorCode.PRODUCT_NOT_FOUND: 404,
    ErrorCode.ENTITLEMENT_NOT_FOUND: 404,
    ErrorCode.USAGE_EVENT_NOT_FOUND: 404,
    ErrorCode.RESERVATION_NOT_FOUND: 404,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.CATALOG_CONFLICT: 409,
    ErrorCode.REVERSAL_EXCEEDS_CONSUMED: 409,
    ErrorCode.DATABASE_BUSY: 503,
    ErrorCode.ACCESS_SOURCE_NOT_FOUND: 404,
    ErrorCode.CHECKOUT_NOT_FOUND: 404,
    ErrorCode.PRODUCT_NOT_PURCHASABLE: 409,
    ErrorCode.SUBSCRIPTION_EXISTS: 409,
    ErrorCode.SUBSCRIPTION_NOT_ACTIVE: 409,
    ErrorCode.SUBSCRIPTION_CANCELING: 409,
    ErrorCode.PLAN_CHANGE_NOT_ALLOWED: 409,
    ErrorCode.NOT_A_TRIAL: 409,
    ErrorCode.PURCHASES_NOT_CONFIGURED: 409,
    ErrorCode.CHECKOUT_CLOSED: 409,
    ErrorCode.SANDBOX_ONLY: 409,
    ErrorCode.LIVE_ONLY: 409,
    ErrorCode.SOURCE_NOT_MANAGEABLE: 409,
    ErrorCode.PROVIDER_NOT_CONFIGURED: 409,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.WEBHOOK_REFUSED: 400,
    ErrorCode.WEBHOOK_UNAUTHORIZED: 401,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND: 404,
    ErrorCode.WEBHOOK_DELIVERY_NOT_FOUND: 404,
}


class ApiError(Exception):
    """An HTTP error raised by the edges themselves (authentication, limits)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def api_error_response(exc: ApiError) -> JSONResponse:
    """The answer to an `ApiError` (refused by the edge: authentication, limits)."""
    return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)


def revenipe_error_response(exc: RevenipeError) -> JSONResponse:
    """The answer to a `RevenipeError` (bad input or a database fault), by its code."""
    status = STATUS_BY_CODE.get(exc.code, 400)
    headers = {"Retry-After": "1"} if status == 503 else None
    extra = {"field": exc.field} if exc.field else {}
    return JSONResponse(error_body(exc.code.value, exc.message, **extra), status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @app.exception_handler(RevenipeError)
    async def _revenipe_error(_: Request, exc: RevenipeError) -> JSONResponse:
        return revenipe_error_response(exc)

    @app.exception_handler(CatalogError)
    async def _catalog_error(_: Request, exc: CatalogError) -> JSONResponse:
        problems = catalog_problems_to_wire(exc)
        return JSONResponse(error_body("invalid_catalog", str(exc), problems=problems), 400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        code = "invalid_request"
        for error in exc.errors():
            location = [str(part) for part in error.get("loc", ()) if part != "body"]
            path = ".".join(location) or "body"
            if location and location[-1] in ("value", "amount"):
                code = "invalid_value"
            problems.append(f"{path}: {error.get('msg', 'invalid')}")
        return JSONResponse(error_body(code, "; ".join(problems) or "invalid request"), 400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it whole, answer without internals.
        logger.error("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body(
                "internal_error", "the server failed to handle this request; the error was logged"
            ),
            500,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
            400: "invalid_request",
        }.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )
