"""The I/O loops: send a `Call`, retrying as `_core` decides. One sync, one async twin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from revenipe.client._core import (
    Call,
    may_retry_exception,
    may_retry_response,
    retry_delay,
    transport_error,
)
from revenipe.client._errors import InvalidArgumentError


class SyncSender:
    """Sends calls over an `httpx.Client`, with bounded retries."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float | httpx.Timeout,
        transport: httpx.BaseTransport | None,
        max_retries: int,
        retry_backoff: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=dict(headers), timeout=timeout, transport=transport
        )
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._sleep = sleep

    def send(self, call: Call[Any], headers: Mapping[str, str]) -> httpx.Response:
        """The final answer to `call`; `TransportError` when no attempt got one."""
        attempt = 0
        while True:
            try:
                response = self._http.send(call.build(self._http, headers))
            except httpx.HTTPError as exc:
                if attempt >= self._max_retries or not may_retry_exception(call, exc):
                    raise transport_error(call, exc, attempt + 1) from exc
                delay = retry_delay(self._retry_backoff, attempt, None)
            else:
                if attempt >= self._max_retries or not may_retry_response(call, response):
                    return response
                delay = retry_delay(self._retry_backoff, attempt, response)
                response.close()
            self._sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()


class AsyncSender:
    """Sends calls over an `httpx.AsyncClient`, with bounded retries."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float | httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None,
        max_retries: int,
        retry_backoff: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=dict(headers), timeout=timeout, transport=transport
        )
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._sleep = sleep

    async def send(self, call: Call[Any], headers: Mapping[str, str]) -> httpx.Response:
        """The final answer to `call`; `TransportError` when no attempt got one."""
        attempt = 0
        while True:
            try:
                response = await self._http.send(call.build(self._http, headers))
            except httpx.HTTPError as exc:
                if attempt >= self._max_retries or not may_retry_exception(call, exc):
                    raise transport_error(call, exc, attempt + 1) from exc
                delay = retry_delay(self._retry_backoff, attempt, None)
            else:
                if attempt >= self._max_retries or not may_retry_response(call, response):
                    return response
                delay = retry_delay(self._retry_backoff, attempt, response)
                await response.aclose()
            await self._sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()


def sync_transport(transport: object) -> httpx.BaseTransport | None:
    """The configured transport for a sync client, checked."""
    if transport is None or isinstance(transport, httpx.BaseTransport):
        return transport
    raise InvalidArgumentError(
        f"a sync client needs an httpx.BaseTransport, got {type(transport).__name__}"
    )


def async_transport(transport: object) -> httpx.AsyncBaseTransport | None:
    """The configured transport for an async client, checked."""
    if transport is None or isinstance(transport, httpx.AsyncBaseTransport):
        return transport
    raise InvalidArgumentError(
        f"an async client needs an httpx.AsyncBaseTransport, got {type(transport).__name__}"
    )
