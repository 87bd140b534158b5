"""Clients of the server API (secret key), for the app's own backend.

The answers are returned as decoded JSON objects, except `mint_customer_token`. Both
twins build their calls here and share the retry rules of the client SDK: reads and
idempotent writes (tracks carry an idempotency key) are resent after a time-out or a
502/503/504; grants and reversals only when the request surely never left.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from revenipe.client._config import DEFAULT_TIMEOUT_SECONDS, validate_common
from revenipe.client._core import (
    IDEMPOTENCY_KEY_HEADER,
    Call,
    Retry,
    base_headers,
    decode_answer,
    path,
    require_amount,
    require_id,
    require_optional_id,
    without_none,
)
from revenipe.client._decode import Reader
from revenipe.client._errors import InvalidArgumentError
from revenipe.client._models import CustomerToken
from revenipe.client._reservations import AsyncServerReservations, ServerReservations
from revenipe.client._transport import AsyncSender, SyncSender, async_transport, sync_transport

__all__ = ["AsyncRevenipeServerClient", "RevenipeServerClient"]

JSONObject = dict[str, Any]
T = TypeVar("T")
MAX_BATCH_ITEMS = 1000


def _json_object(r: Reader) -> JSONObject:
    return r.raw()


def _timestamp(name: str, value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return require_optional_id(name, value)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgumentError(f"{name} must be a timezone-aware datetime or ISO string")
    return value.isoformat()


def _optional_int(name: str, value: object, *, minimum: int | None) -> int | None:
    if value is None:
        return None
    if type(value) is not int or (minimum is not None and value < minimum):
        floor = "" if minimum is None else f" >= {minimum}"
        raise InvalidArgumentError(f"{name} must be an integer{floor}, got {value!r}")
    return value


def _catalog(document: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(document, Mapping):
        raise InvalidArgumentError("the catalog must be a mapping (the YAML document, parsed)")
    return dict(document)


class _Calls:
    """The server API's calls; both twins send exactly these."""

    @staticmethod
    def mint_customer_token(external_id: str, ttl_seconds: int | None) -> Call[CustomerToken]:
        require_id("external_id", external_id)
        body = without_none(ttl_seconds=_optional_int("ttl_seconds", ttl_seconds, minimum=1))
        return Call(
            "POST", path("v1", "customers", external_id, "tokens"), CustomerToken._decode, body=body
        )

    @staticmethod
    def get_customer(external_id: str) -> Call[JSONObject]:
        require_id("external_id", external_id)
        return Call("GET", path("v1", "customers", external_id), _json_object)

    @staticmethod
    def grant_product(external_id: str, product_id: str) -> Call[JSONObject]:
        require_id("external_id", external_id)
        require_id("product_id", product_id)
        return Call(
            "POST",
            path("v1", "customers", external_id, "grants"),
            _json_object,
            body={"product_id": product_id},
            retry=Retry.BEFORE_SENT,
        )

    @staticmethod
    def grant_entitlement(
        external_id: str,
        entitlement_id: str,
        amount: int,
        expires_at: datetime | str | None,
        priority: int | None,
    ) -> Call[JSONObject]:
        require_id("external_id", external_id)
        require_id("entitlement_id", entitlement_id)
        body = without_none(
            entitlement_id=entitlement_id,
            amount=require_amount("amount", amount),
            expires_at=_timestamp("expires_at", expires_at),
            priority=_optional_int("priority", priority, minimum=None),
        )
        return Call(
            "POST",
            path("v1", "customers", external_id, "grants"),
            _json_object,
            body=body,
            retry=Retry.BEFORE_SENT,
        )

    @staticmethod
    def track(
        external_id: str,
        id: str,
        value: int,
        access_source_id: str | None,
        idempotency_key: str | None,
    ) -> Call[JSONObject]:
        require_id("external_id", external_id)
        body = without_none(
            id=require_id("id", id),
            value=require_amount("value", value),
            access_source_id=require_optional_id("access_source_id", access_source_id),
        )
        key = require_optional_id("idempotency_key", idempotency_key) or str(uuid.uuid4())
        return Call(
            "POST",
            path("v1", "customers", external_id, "track"),
            _json_object,
            body=body,
            headers={IDEMPOTENCY_KEY_HEADER: key},
        )

    @staticmethod
    def track_batch(items: Sequence[Mapping[str, Any]]) -> Call[JSONObject]:
        if isinstance(items, str | bytes) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise InvalidArgumentError(f"items: 1 to {MAX_BATCH_ITEMS} tracks")
        # Keys fixed once, so that every retry of this call replays what was applied.
        body = [{"idempotency_key": str(uuid.uuid4()), **item} for item in items]
        return Call("POST", "v1/track/batch", _json_object, body={"items": body})

    @staticmethod
    def check(external_id: str, id: str, value: int) -> Call[JSONObject]:
        require_id("external_id", external_id)
        body = {"id": require_id("id", id), "value": require_amount("value", value)}
        return Call("POST", path("v1", "customers", external_id, "check"), _json_object, body=body)

    @staticmethod
    def reverse_usage_event(usage_event_id: str, amount: int | None) -> Call[JSONObject]:
        require_id("usage_event_id", usage_event_id)
        body = without_none(amount=None if amount is None else require_amount("amount", amount))
        return Call(
            "POST",
            path("v1", "usage_events", usage_event_id, "reversals"),
            _json_object,
            body=body,
            retry=Retry.BEFORE_SENT,
        )

    @staticmethod
    def list_usage_events(
        customer: str | None,
        id: str | None,
        since: datetime | str | None,
        until: datetime | str | None,
        cursor: str | None,
        limit: int | None,
    ) -> Call[JSONObject]:
        limit_value = _optional_int("limit", limit, minimum=1)
        params = without_none(
            customer=require_optional_id("customer", customer),
            id=require_optional_id("id", id),
            since=_timestamp("since", since),
            until=_timestamp("until", until),
            cursor=require_optional_id("cursor", cursor),
            limit=None if limit_value is None else str(limit_value),
        )
        return Call("GET", "v1/usage_events", _json_object, params=params)

    @staticmethod
    def get_catalog() -> Call[JSONObject]:
        return Call("GET", "v1/catalog", _json_object)

    @staticmethod
    def put_catalog(document: Mapping[str, Any]) -> Call[JSONObject]:
        return Call("PUT", "v1/catalog", _json_object, body=_catalog(document))

    @staticmethod
    def validate_catalog(document: Mapping[str, Any]) -> Call[JSONObject]:
        return Call("POST", "v1/catalog/validate", _json_object, body=_catalog(document))

    @staticmethod
    def sandbox_clock() -> Call[JSONObject]:
        return Call("GET", "v1/sandbox/clock", _json_object)

    @staticmethod
    def advance_sandbox_clock(days: int, hours: int, seconds: int) -> Call[JSONObject]:
        body = {
            "days": _optional_int("days", days, minimum=0),
            "hours": _optional_int("hours", hours, minimum=0),
            "seconds": _optional_int("seconds", seconds, minimum=0),
        }
        if not any(body.values()):
            raise InvalidArgumentError("advance the clock by some time: days, hours or seconds")
        # Moving time is not idempotent: resent only when the request surely never left.
        return Call(
            "POST", "v1/sandbox/clock/advance", _json_object, body=body, retry=Retry.BEFORE_SENT
        )

    @staticmethod
    def request(
        method: Literal["GET", "POST", "PUT"],
        relative_path: str,
        json: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        retry: bool,
    ) -> Call[JSONObject]:
        if method not in ("GET", "POST", "PUT"):
            raise InvalidArgumentError(f"method must be GET, POST or PUT, got {method!r}")
        require_id("path", relative_path)
        if relative_path.startswith("/") or "://" in relative_path:
            raise InvalidArgumentError("path must be relative to the base URL, like 'v1/catalog'")
        return Call(
            method,
            relative_path,
            _json_object,
            body=json,
            params=params,
            retry=Retry.ALWAYS if retry else Retry.BEFORE_SENT,
        )


def _server_headers(secret_key: str, default_headers: Mapping[str, str] | None) -> dict[str, str]:
    if not isinstance(secret_key, str) or not secret_key:
        raise InvalidArgumentError("secret_key must be a non-empty string")
    return base_headers(f"Bearer {secret_key}", default_headers or {})


class RevenipeServerClient(ServerReservations):
    """Sync client of the server API, authenticated by one of the app's secret keys.

    For the app's backend only: never ship a secret key in a mobile or web client.

        server = RevenipeServerClient("https://revenipe.example.com/", secret_key)
        token = server.mint_customer_token("user-42").token

    Non-2xx answers raise the same errors as the client SDK (`ApiError` and its
    subclasses); other answers are returned as decoded JSON objects.
    """

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        default_headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """A client of the server at `base_url`, sending `Authorization: Bearer <key>`."""
        validate_common(
            base_url=base_url,
            default_headers=default_headers or {},
            max_retries=max_retries,
            retry_backoff=retry_backoff,
        )
        self._sender = SyncSender(
            base_url=base_url,
            headers=_server_headers(secret_key, default_headers),
            timeout=timeout,
            transport=sync_transport(transport),
            max_retries=max_retries,
            retry_backoff=retry_backoff,
        )

    def _execute(self, call: Call[T]) -> T:
        return decode_answer(call, self._sender.send(call, {}))

    def mint_customer_token(
        self, external_id: str, ttl_seconds: int | None = None
    ) -> CustomerToken:
        """A short-lived token for customer `external_id`, for the client SDK's supplier."""
        return self._execute(_Calls.mint_customer_token(external_id, ttl_seconds))

    def get_customer(self, external_id: str) -> JSONObject:
        """Customer `external_id` with their access state."""
        return self._execute(_Calls.get_customer(external_id))

    def grant_product(self, external_id: str, product_id: str) -> JSONObject:
        """Grants product `product_id` to the customer (a manual or promotional grant)."""
        return self._execute(_Calls.grant_product(external_id, product_id))

    def grant_entitlement(
        self,
        external_id: str,
        entitlement_id: str,
        amount: int,
        *,
        expires_at: datetime | str | None = None,
        priority: int | None = None,
    ) -> JSONObject:
        """Grants `amount` of entitlement `entitlement_id` to the customer directly."""
        return self._execute(
            _Calls.grant_entitlement(external_id, entitlement_id, amount, expires_at, priority)
        )

    def track(
        self,
        external_id: str,
        id: str,
        value: int,
        *,
        access_source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSONObject:
        """Consumes `value` of entitlement or usage key `id` for the customer.

        Carries an idempotency key (a fresh uuid4 unless given), reused on retries.
        """
        return self._execute(
            _Calls.track(external_id, id, value, access_source_id, idempotency_key)
        )

    def track_batch(self, items: Sequence[Mapping[str, Any]]) -> JSONObject:
        """Up to 1,000 tracks `{"customer", "id", "value", "idempotency_key"?}` in one
        request, answered per item in order (`{"items": [...]}`); an item without a key
        gets a uuid4, kept on retries, so a retried batch charges nothing twice."""
        return self._execute(_Calls.track_batch(items))

    def check(self, external_id: str, id: str, value: int) -> JSONObject:
        """Whether the customer could consume `value` of `id` now, without consuming."""
        return self._execute(_Calls.check(external_id, id, value))

    def reverse_usage_event(self, usage_event_id: str, amount: int | None = None) -> JSONObject:
        """Gives a usage event's consumption (all, or `amount`) back to the grants that paid."""
        return self._execute(_Calls.reverse_usage_event(usage_event_id, amount))

    def list_usage_events(
        self,
        *,
        customer: str | None = None,
        id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> JSONObject:
        """One page of usage events, filtered; pass the answer's cursor for the next."""
        return self._execute(_Calls.list_usage_events(customer, id, since, until, cursor, limit))

    def get_catalog(self) -> JSONObject:
        """The app's current catalog."""
        return self._execute(_Calls.get_catalog())

    def put_catalog(self, document: Mapping[str, Any]) -> JSONObject:
        """Applies `document` (the catalog YAML, parsed) as the app's new catalog version."""
        return self._execute(_Calls.put_catalog(document))

    def validate_catalog(self, document: Mapping[str, Any]) -> JSONObject:
        """Validates `document` without applying it."""
        return self._execute(_Calls.validate_catalog(document))

    def sandbox_clock(self) -> JSONObject:
        """A sandbox app's current time (`now`) and how far its test clock is ahead."""
        return self._execute(_Calls.sandbox_clock())

    def advance_sandbox_clock(
        self, *, days: int = 0, hours: int = 0, seconds: int = 0
    ) -> JSONObject:
        """Moves a sandbox app's test clock forward; renewals, trial ends and expiry
        that fall in between happen as they would have in real time."""
        return self._execute(_Calls.advance_sandbox_clock(days, hours, seconds))

    def request(
        self,
        method: Literal["GET", "POST", "PUT"],
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        retry: bool = False,
    ) -> JSONObject:
        """Any other server-API call: `path` relative to the base URL, already encoded.

        `retry=True` lets time-outs and 502/503/504 be retried: only for calls safe to
        repeat.
        """
        return self._execute(_Calls.request(method, path, json, params, retry))

    def close(self) -> None:
        """Closes the connection pool."""
        self._sender.close()

    def __enter__(self) -> RevenipeServerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRevenipeServerClient(AsyncServerReservations):
    """Async client of the server API, authenticated by one of the app's secret keys.

    For the app's backend only: never ship a secret key in a mobile or web client.

        server = AsyncRevenipeServerClient("https://revenipe.example.com/", secret_key)
        token = (await server.mint_customer_token("user-42")).token

    Non-2xx answers raise the same errors as the client SDK (`ApiError` and its
    subclasses); other answers are returned as decoded JSON objects.
    """

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        default_headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """A client of the server at `base_url`, sending `Authorization: Bearer <key>`."""
        validate_common(
            base_url=base_url,
            default_headers=default_headers or {},
            max_retries=max_retries,
            retry_backoff=retry_backoff,
        )
        self._sender = AsyncSender(
            base_url=base_url,
            headers=_server_headers(secret_key, default_headers),
            timeout=timeout,
            transport=async_transport(transport),
            max_retries=max_retries,
            retry_backoff=retry_backoff,
        )

    async def _execute(self, call: Call[T]) -> T:
        return decode_answer(call, await self._sender.send(call, {}))

    async def mint_customer_token(
        self, external_id: str, ttl_seconds: int | None = None
    ) -> CustomerToken:
        """A short-lived token for customer `external_id`, for the client SDK's supplier."""
        return await self._execute(_Calls.mint_customer_token(external_id, ttl_seconds))

    async def get_customer(self, external_id: str) -> JSONObject:
        """Customer `external_id` with their access state."""
        return await self._execute(_Calls.get_customer(external_id))

    async def grant_product(self, external_id: str, product_id: str) -> JSONObject:
        """Grants product `product_id` to the customer (a manual or promotional grant)."""
        return await self._execute(_Calls.grant_product(external_id, product_id))

    async def grant_entitlement(
        self,
        external_id: str,
        entitlement_id: str,
        amount: int,
        *,
        expires_at: datetime | str | None = None,
        priority: int | None = None,
    ) -> JSONObject:
        """Grants `amount` of entitlement `entitlement_id` to the customer directly."""
        return await self._execute(
            _Calls.grant_entitlement(external_id, entitlement_id, amount, expires_at, priority)
        )

    async def track(
        self,
        external_id: str,
        id: str,
        value: int,
        *,
        access_source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSONObject:
        """Consumes `value` of entitlement or usage key `id` for the customer.

        Carries an idempotency key (a fresh uuid4 unless given), reused on retries.
        """
        return await self._execute(
            _Calls.track(external_id, id, value, access_source_id, idempotency_key)
        )

    async def track_batch(self, items: Sequence[Mapping[str, Any]]) -> JSONObject:
        """`RevenipeServerClient.track_batch`, awaited."""
        return await self._execute(_Calls.track_batch(items))

    async def check(self, external_id: str, id: str, value: int) -> JSONObject:
        """Whether the customer could consume `value` of `id` now, without consuming."""
        return await self._execute(_Calls.check(external_id, id, value))

    async def reverse_usage_event(
        self, usage_event_id: str, amount: int | None = None
    ) -> JSONObject:
        """Gives a usage event's consumption (all, or `amount`) back to the grants that paid."""
        return await self._execute(_Calls.reverse_usage_event(usage_event_id, amount))

    async def list_usage_events(
        self,
        *,
        customer: str | None = None,
        id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> JSONObject:
        """One page of usage events, filtered; pass the answer's cursor for the next."""
        return await self._execute(
            _Calls.list_usage_events(customer, id, since, until, cursor, limit)
        )

    async def get_catalog(self) -> JSONObject:
        """The app's current catalog."""
        return await self._execute(_Calls.get_catalog())

    async def put_catalog(self, document: Mapping[str, Any]) -> JSONObject:
        """Applies `document` (the catalog YAML, parsed) as the app's new catalog version."""
        return await self._execute(_Calls.put_catalog(document))

    async def validate_catalog(self, document: Mapping[str, Any]) -> JSONObject:
        """Validates `document` without applying it."""
        return await self._execute(_Calls.validate_catalog(document))

    async def sandbox_clock(self) -> JSONObject:
        """A sandbox app's current time (`now`) and how far its test clock is ahead."""
        return await self._execute(_Calls.sandbox_clock())

    async def advance_sandbox_clock(
        self, *, days: int = 0, hours: int = 0, seconds: int = 0
    ) -> JSONObject:
        """Moves a sandbox app's test clock forward; renewals, trial ends and expiry
        that fall in between happen as they would have in real time."""
        return await self._execute(_Calls.advance_sandbox_clock(days, hours, seconds))

    async def request(
        self,
        method: Literal["GET", "POST", "PUT"],
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        retry: bool = False,
    ) -> JSONObject:
        """Any other server-API call: `path` relative to the base URL, already encoded.

        `retry=True` lets time-outs and 502/503/504 be retried: only for calls safe to
        repeat.
        """
        return await self._execute(_Calls.request(method, path, json, params, retry))

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._sender.aclose()

    async def __aenter__(self) -> AsyncRevenipeServerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
