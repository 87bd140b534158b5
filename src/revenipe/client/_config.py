"""Configuration of the client SDK."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from revenipe.client._errors import InvalidArgumentError

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "CustomerTokenSupplier", "RevenipeConfig"]

DEFAULT_TIMEOUT_SECONDS = 15.0
"""Connect and read time-out, as in the published mobile SDK
(docs/concepts/client-protocol.md#transport)."""

CustomerTokenSupplier = Callable[[str], str | Awaitable[str]]
"""Returns a customer token for an external customer id (the id the app logged in with).

Typically a call to the app's own backend, which mints the token with its secret key
(`RevenipeServerClient.mint_customer_token`). May be sync or async (`RevenipeSync`
needs a sync one). The SDK calls it when it has no token for the current customer, and
once more when the server answers 401 (the token expired); it caches the token between.
"""

# Headers the SDK owns: letting default headers replace them would break the protocol.
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "idempotency-key"})


@dataclass(frozen=True)
class RevenipeConfig:
    """How the client SDK reaches the server.

    Attributes:
        app_id: the app's *public* id, sent bare in `Authorization`.
        base_url: the server's root URL (e.g. `https://revenipe.example.com/`); the
            protocol's paths (`v1/client/auth`...) are resolved relative to it.
        default_headers: extra headers sent with every request.
        timeout: seconds (or an `httpx.Timeout`) for connecting and reading; 15 s.
        customer_token_supplier: a hook returning a customer token for an external id,
            sent as `X-Revenipe-Customer-Token`; `None` for servers in open mode.
        max_retries: automatic retries after a time-out, a connection failure or a
            502/503/504 answer (tracks reuse their idempotency key); 2 by default.
        retry_backoff: seconds before the first retry, doubled at each next one.
        transport: an `httpx` transport to use instead of the network (tests, proxies):
            an `httpx.AsyncBaseTransport` for `Revenipe`, an `httpx.BaseTransport` for
            `RevenipeSync` (`httpx.MockTransport` is both).
    """

    app_id: str
    base_url: str
    default_headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_SECONDS
    customer_token_supplier: CustomerTokenSupplier | None = None
    max_retries: int = 2
    retry_backoff: float = 0.5
    transport: httpx.AsyncBaseTransport | httpx.BaseTransport | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.app_id, str) or not self.app_id:
            raise InvalidArgumentError("app_id must be a non-empty string")
        validate_common(
            base_url=self.base_url,
            default_headers=self.default_headers,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
        )
        if self.customer_token_supplier is not None and not callable(self.customer_token_supplier):
            raise InvalidArgumentError("customer_token_supplier must be callable")


def validate_common(
    *,
    base_url: str,
    default_headers: Mapping[str, str],
    max_retries: int,
    retry_backoff: float,
) -> None:
    """Checks shared by the client SDK and the server-API client."""
    if not isinstance(base_url, str) or not base_url:
        raise InvalidArgumentError("base_url must be a non-empty string")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise InvalidArgumentError(f"base_url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidArgumentError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    reserved = sorted(name for name in default_headers if name.lower() in _RESERVED_HEADERS)
    if reserved:
        raise InvalidArgumentError(
            f"default_headers may not set {', '.join(reserved)}: the SDK sends those itself"
        )
    if type(max_retries) is not int or max_retries < 0:
        raise InvalidArgumentError("max_retries must be an integer >= 0")
    if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, int | float):
        raise InvalidArgumentError("retry_backoff must be a number of seconds >= 0")
    if retry_backoff < 0:
        raise InvalidArgumentError("retry_backoff must be a number of seconds >= 0")
