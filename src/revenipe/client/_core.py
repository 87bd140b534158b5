"""Sans-I/O core shared by every client: what to send, how to read the answer, when to retry.

The async and sync clients (and the server-API clients) only move bytes; every decision
about paths, bodies, headers, errors and retries is made here, once.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from revenipe.client._decode import Reader
from revenipe.client._errors import (
    ApiError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    TransportError,
)

T = TypeVar("T")

MAX_TRACK_VALUE = 2**53 - 1
"""The largest amount a track may ask for (the largest integer JSON carries exactly)."""

RETRYABLE_STATUS_CODES = frozenset({502, 503, 504})
MAX_RETRY_DELAY_SECONDS = 30.0

CUSTOMER_TOKEN_HEADER = "X-Revenipe-Customer-Token"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


class Retry(enum.Enum):
    """Which failures a call may be resent after."""

    ALWAYS = "always"
    """Safe to resend whatever happened: reads, idempotent writes, tracks with a key."""

    BEFORE_SENT = "before_sent"
    """Resend only when the request surely never reached the server (connect failures)."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical API call: the request to send and how to decode its answer.

    The same `Call` (same body, same idempotency key) is sent again on every retry.
    """

    method: Literal["GET", "POST", "PUT"]
    path: str
    decode: Callable[[Reader], T]
    body: Mapping[str, Any] | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry: Retry = Retry.ALWAYS
    customer: str | None = None
    """External id whose customer token goes with the call (client SDK only)."""

    def build(
        self, client: httpx.Client | httpx.AsyncClient, extra: Mapping[str, str]
    ) -> httpx.Request:
        """The httpx request for one attempt."""
        return client.build_request(
            self.method,
            self.path,
            json=self.body,
            params=dict(self.params) if self.params else None,
            headers={**self.headers, **extra},
        )


# -- arguments -------------------------------------------------------------------------


def require_id(name: str, value: object) -> str:
    """A non-empty string id, or `InvalidArgumentError`."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    return value


def require_optional_id(name: str, value: object) -> str | None:
    """`None` or a non-empty string id."""
    return None if value is None else require_id(name, value)


def require_amount(name: str, value: object) -> int:
    """A positive integer amount: no booleans, floats or strings (`InvalidArgumentError`)."""
    if type(value) is not int:
        raise InvalidArgumentError(
            f"{name} must be a positive integer, got {type(value).__name__} {value!r}"
        )
    if not 1 <= value <= MAX_TRACK_VALUE:
        raise InvalidArgumentError(f"{name} must be between 1 and {MAX_TRACK_VALUE}, got {value}")
    return value


def require_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of `choices`, or `InvalidArgumentError`."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def path(*segments: str) -> str:
    """A relative path from fixed parts and caller-supplied segments, each URL-encoded.

    `.` and `..` are refused: they would walk to another endpoint once the URL is
    normalized.
    """
    parts = []
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidArgumentError(f"{segment!r} is not a valid path segment")
        parts.append(quote(segment, safe=""))
    return "/".join(parts)


def without_none(**fields: Any) -> dict[str, Any]:
    """A JSON body with the optional (`None`) fields left out."""
    return {key: value for key, value in fields.items() if value is not None}


# -- answers ---------------------------------------------------------------------------


def decode_answer(call: Call[T], response: httpx.Response) -> T:
    """The decoded answer of a 2xx response, or the typed error of any other."""
    if not response.is_success:
        raise error_from_response(response)
    try:
        data = json.loads(response.content)
    except ValueError:
        raise ProtocolError(
            f"{call.method} {call.path}: the answer is not JSON "
            f"({response.headers.get('content-type', 'no content type')})"
        ) from None
    return call.decode(Reader(data))


def error_from_response(response: httpx.Response) -> ApiError:
    """The `ApiError` subclass for a non-2xx answer, with `message` and `code` from its body."""
    body: Any
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    message: str | None = None
    code: str | None = None
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
        if isinstance(body.get("code"), str):
            code = body["code"]
    if message is None:
        text = response.text.strip() if body is None else ""
        message = text[:200] or response.reason_phrase or "HTTP error"
    status = response.status_code
    if status == 401:
        return AuthenticationError(status, message, code, body)
    if status == 403:
        return PermissionDeniedError(status, message, code, body)
    if status == 404:
        return NotFoundError(status, message, code, body)
    if status == 429:
        return RateLimitedError(status, message, code, body, retry_after=retry_after(response))
    return ApiError(status, message, code, body)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delay or HTTP date), if there is a valid one."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


# -- retries ---------------------------------------------------------------------------

# The request never left: resending cannot apply anything twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The request may have reached the server: resend only what is safe to repeat.
_MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def may_retry_exception(call: Call[Any], exc: Exception) -> bool:
    """Whether a failed attempt may be resent."""
    if isinstance(exc, _NOT_SENT):
        return True
    return isinstance(exc, _MAYBE_SENT) and call.retry is Retry.ALWAYS


def may_retry_response(call: Call[Any], response: httpx.Response) -> bool:
    """Whether an answer is a transient gateway failure worth resending after."""
    return response.status_code in RETRYABLE_STATUS_CODES and call.retry is Retry.ALWAYS


def retry_delay(backoff: float, attempt: int, response: httpx.Response | None) -> float:
    """Seconds to wait before retry number `attempt + 1` (exponential, jittered, capped).

    A `Retry-After` on the answer wins, capped too, so the number of retries bounds the
    total wait.
    """
    if response is not None:
        asked = retry_after(response)
        if asked is not None:
            return min(asked, MAX_RETRY_DELAY_SECONDS)
    if backoff <= 0:
        return 0.0
    delay = min(backoff * 2.0**attempt, MAX_RETRY_DELAY_SECONDS)
    # Jitter keeps clients that failed together from retrying together.
    return delay * random.uniform(0.5, 1.0)


def transport_error(call: Call[Any], exc: Exception, attempts: int) -> TransportError:
    """The error raised when no attempt got an answer."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return TransportError(
        f"{call.method} {call.path}: {type(exc).__name__}: {exc or 'no detail'} ({tries})"
    )


def base_headers(authorization: str, default_headers: Mapping[str, str]) -> dict[str, str]:
    """Headers of every request: the app's extras, then the protocol's own."""
    return {
        **default_headers,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": authorization,
    }
