"""What the route modules share: the declared error responses, the parameters several
routes take, and the server API's router (prefix, tag, errors)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.periods import require_utc
from revenipe.server.runtime import Runtime
from revenipe.server.security import server_app_id
from revenipe.services.customers import CustomerRef
from revenipe.wire.common import ErrorOut

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 429, 502, 503)
}
"""Every error answer is an `ErrorOut` (code and message), declared on every route."""

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z]{3}_[0-9a-f]{1,40}$")]
CatalogIdQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_.\-]{1,64}$")]
TimeQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9T:.+\-Z ]{4,64}$")]
CustomerQuery = Annotated[str | None, Query(max_length=256)]


def server_api_router() -> APIRouter:
    """A router of the server API: under `/v1/`, tagged, with the error answers declared.
    Its routes authenticate with `security.server_app_id` (a secret key)."""
    return APIRouter(prefix="/v1", tags=["server API"], responses=ERRORS)


def secret_key_app(runtime: Runtime) -> Callable[[Request], str]:
    """The server API's authentication: the app whose secret key the request carries
    (401 otherwise). Called first thing in each handler, after the body is validated."""

    def app_of(request: Request) -> str:
        return server_app_id(request, runtime.secret_keys)

    return app_of


def parse_time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} must be an ISO-8601 time with a zone, e.g. 2026-11-25T10:00:00Z",
            field=field,
        )
    return require_utc(moment, field=field)


def external(external_id: str) -> CustomerRef:
    return CustomerRef.external(external_id)
