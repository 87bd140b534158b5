"""The SDK's one exception hierarchy: everything it raises derives from `RevenipeClientError`.

A refused track (not enough left, unknown id) is *not* an exception: it is a
`TrackResult` with `success=False`. Exceptions mean the call itself did not produce an
answer the app can act on.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationError",
    "HoldRefusedError",
    "InvalidArgumentError",
    "NotConfiguredError",
    "NotFoundError",
    "NotLoggedInError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitedError",
    "RevenipeClientError",
    "TransportError",
]


class RevenipeClientError(Exception):
    """Base class of every exception the Revenipe SDK raises."""


class ApiError(RevenipeClientError):
    """The server answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status of the answer.
        message: the `message` of the JSON error body (or a fallback when there is none).
        code: the machine-readable `code` of the JSON error body, if it carried one.
        body: the decoded JSON error body, or `None` when it was not JSON.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status_code}: {message}" + (f" ({code})" if code else ""))
        self.status_code = status_code
        self.message = message
        self.code = code
        self.body = body


class AuthenticationError(ApiError):
    """401: the app id, secret key or customer token was missing, wrong or expired.

    The SDK has already asked the customer token supplier for a fresh token once
    before raising this.
    """


class PermissionDeniedError(ApiError):
    """403: the credentials are valid but do not allow this call (e.g. another customer)."""


class NotFoundError(ApiError):
    """404: the customer, product, usage event or endpoint does not exist."""


class RateLimitedError(ApiError):
    """429: too many requests.

    Attributes:
        retry_after: seconds the server asked to wait (from `Retry-After`), if it said.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, message, code, body)
        self.retry_after = retry_after


class TransportError(RevenipeClientError):
    """No answer from the server (time-out, connection failure), after every retry.

    The original `httpx` exception is chained as `__cause__`. A track that ends in this
    error may or may not have been applied; retrying it with the same `idempotency_key`
    is safe.
    """


class ProtocolError(RevenipeClientError):
    """The server's answer does not follow the client protocol (wrong type, missing field)."""


class NotLoggedInError(RevenipeClientError):
    """The call needs a customer: call `login` or `anonym_login` first."""


class NotConfiguredError(RevenipeClientError):
    """The client has no configuration yet: call `configure` first."""


class InvalidArgumentError(RevenipeClientError, ValueError):
    """An argument was rejected locally, before any network call (e.g. `value=1.5`)."""


class HoldRefusedError(RevenipeClientError):
    """`async with reserve(...)` could not hold (not enough left, unknown id...): nothing
    was held and the block did not run. `error` is the refusal code, `remaining` what
    is left of the id."""

    def __init__(self, error: str, remaining: int) -> None:
        super().__init__(f"the hold was refused: {error} ({remaining} remaining)")
        self.error = error
        self.remaining = remaining
