"""Limits that protect the server: request body size and JSON nesting, anonymous-login
rate, and floods of client-protocol requests (per address, per app, per customer)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Refuse bodies over `max_bytes` with 413, and JSON nested deeper than `max_depth`
    with 400, before the application parses them.

    A declared Content-Length over the limit is refused without reading; otherwise the
    body is read (at most `max_bytes` + one chunk) and handed on whole. Bodies here are
    small JSON objects, so buffering them costs nothing worth measuring.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_depth: int = 32,
        max_bytes_by_path: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_bytes_by_path = dict(max_bytes_by_path or {})
        """Paths whose bodies may be larger (a batch of 1,000 tracks)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes_by_path.get(scope.get("path", ""), self.max_bytes)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = max_bytes + 1
                if declared > max_bytes:
                    await self._refuse(send, max_bytes)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the application see the disconnect.
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                await self._refuse(send, max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth_over(body, self.max_depth):
            # The parser would recurse that deep (and fail with a message that says
            # nothing); no request of ours nests more than a few levels.
            await refuse(
                send, 400, "body_too_deep", f"JSON nested deeper than {self.max_depth} levels"
            )
            return
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([whole], then=receive), send)

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        await refuse(
            send,
            413,
            "body_too_large",
            f"request body is over {max_bytes} bytes",
            [(b"connection", b"close")],
        )


async def refuse(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with our JSON error shape, from a middleware (no application involved)."""
    body = json.dumps({"code": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def json_depth_over(body: bytes, max_depth: int) -> bool:
    """Does `body` (JSON, or not) open more than `max_depth` arrays/objects at once?

    Counting brackets bounds the depth from above, so the usual small body is cleared
    by two `count` calls; only a body with many brackets is scanned (strings skipped).
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


@dataclass
class RateLimiter:
    """Token buckets by key, in this process: `per_minute` tokens, refilled continuously,
    holding at most `burst` (by default a whole minute's worth). 0 turns it off.

    Per process: with N workers the effective limit is up to N times higher. That keeps
    the limiter free of shared state; the numbers are set with that in mind.
    """

    per_minute: int
    burst: int | None = None
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str) -> float:
        """Take one token; return 0 if allowed, else the seconds until one is available."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        capacity = float(self.burst or self.per_minute)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 100_000:
                    self._buckets.clear()
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait of `wait_s`."""
    return str(max(1, math.ceil(wait_s)))


CLIENT_PROTOCOL_PREFIXES = ("/v1/client/", "/v1/customer/")


class ClientFloodLimit:
    """Refuse floods of client-protocol requests with 429 and Retry-After, before the
    body is read: per client address and per app id (the Authorization header as sent).
    The server API (secret keys, the app's own backend) is never limited here; the
    per-customer limit needs a verified token and is applied after authentication."""

    def __init__(self, app: ASGIApp, by_address: RateLimiter, by_app: RateLimiter) -> None:
        self.app = app
        self.by_address = by_address
        self.by_app = by_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(
            CLIENT_PROTOCOL_PREFIXES
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        app_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                app_id = value[:80].decode("latin-1").strip()
                break
        wait = self.by_address.take(address)
        if wait == 0 and app_id:
            wait = self.by_app.take(app_id)
        if wait > 0:
            await refuse(
                send,
                429,
                "rate_limited",
                "too many requests from this address or for this app; retry after the "
                "given seconds",
                [(b"retry-after", retry_after(wait).encode())],
            )
            return
        await self.app(scope, receive, send)
