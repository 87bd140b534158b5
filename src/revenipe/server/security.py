"""Who is calling: an app (public id), an app's backend (secret key), a customer (token).

The client protocol names the app by its public id and the customer by `client_id` in
the body; anyone who has the app id can name any `client_id`. Under the `enforce`
policy (the default) every client request that names a customer must also carry a
customer token minted by the app's backend, and every customer or source id in the
request must belong to that token's customer (the product list names no customer and
needs only the app id). Refusals say why without revealing anything about other customers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from fastapi import Request

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.tokens import InvalidToken, TokenClaims
from revenipe.server.errors import ApiError
from revenipe.services import apps as app_service
from revenipe.services.apps import TokenPolicy
from revenipe.services.context import ServiceContext
from revenipe.services.tokens import check_customer_token
from revenipe.storage import apps as app_store

CUSTOMER_TOKEN_HEADER = "X-Revenipe-Customer-Token"
V = TypeVar("V")


class NotCached(Exception):
    """Authenticating needs a database read that the caller asked not to make."""


class _Recent(Generic[V]):
    """Values read from the database, trusted for `ttl` seconds.

    Past that the value is read again, by one caller only: while that read is under way,
    callers that must not read (`cached_only`: they are on the event loop) get the value
    it replaces, for at most one more `ttl`, instead of all reading at once (a burst of
    thread-pool hops and identical reads every `ttl` seconds under load)."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[str, tuple[float, V]] = {}
        self._reading: set[str] = set()

    def get(
        self, key: str, load: Callable[[], V], *, cached_only: bool, keep: Callable[[V], bool]
    ) -> V:
        """The value of `key`; `load` reads it (its result stored if `keep` says so);
        `cached_only`: raise `NotCached` rather than read, and let the caller read it
        again without `cached_only` (off the event loop)."""
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None:
            age = now - cached[0]
            if age < self.ttl or (cached_only and key in self._reading and age < 2 * self.ttl):
                return cached[1]
        if cached_only:
            self._reading.add(key)  # this caller reads it next; the others wait on the old
            raise NotCached
        try:
            value = load()
        finally:
            self._reading.discard(key)
        if keep(value):
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (now, value)
        return value

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_all(self) -> None:
        self._entries.clear()


class AppCache:
    """App rows by id for a few seconds: the client protocol reads one per request."""

    def __init__(self, ctx: ServiceContext, ttl_seconds: float) -> None:
        self.ctx = ctx
        self.ttl = ttl_seconds
        self._recent: _Recent[app_store.AppRow | None] = _Recent(ttl_seconds)

    def get(self, app_id: str, *, cached_only: bool = False) -> app_store.AppRow | None:
        """The app (None: no such app); `cached_only`: raise `NotCached` rather than read
        the database (a caller on the event loop must not block it)."""
        return self._recent.get(
            app_id, lambda: self._read(app_id), cached_only=cached_only, keep=lambda _: True
        )

    def _read(self, app_id: str) -> app_store.AppRow | None:
        try:
            return app_service.get_app(self.ctx, app_id)
        except RevenipeError as exc:
            # Only "no such app" is an answer; a database fault must not turn into
            # "invalid app id" (cached, too): it propagates as the 503 it is.
            if exc.code is not ErrorCode.APP_NOT_FOUND:
                raise
            return None

    def forget(self, app_id: str) -> None:
        self._recent.forget(app_id)


@dataclass(frozen=True)
class ClientAccess:
    """An authenticated client request: its app and, if it sent one, a valid token."""

    app: app_store.AppRow
    claims: TokenClaims | None

    @property
    def enforced(self) -> bool:
        return self.app.token_policy == TokenPolicy.ENFORCE.value

    def require_customer(self, customer_id: str) -> None:
        """Refuse unless the request may act for `customer_id`."""
        if self.claims is None:
            if self.enforced:
                raise ApiError(
                    401,
                    "customer_token_required",
                    f"this app requires a customer token in the {CUSTOMER_TOKEN_HEADER} header",
                )
            return
        if self.claims.customer_id != customer_id:
            raise ApiError(
                403, "forbidden", "the customer token does not allow acting for this customer"
            )


def client_access(
    request: Request, app_cache: AppCache, now: datetime, *, cached_only: bool = False
) -> ClientAccess:
    """Authenticate a client protocol request (`Authorization: <app id>` + token);
    `cached_only`: raise `NotCached` where it would read the database."""
    app_id = request.headers.get("authorization", "").strip()
    if app_id.lower().startswith("bearer "):
        app_id = app_id[7:].strip()
    app = app_cache.get(app_id, cached_only=cached_only) if app_id and len(app_id) <= 64 else None
    if app is None:
        raise ApiError(
            401, "invalid_app_id", "the Authorization header must carry this server's public app id"
        )
    token = request.headers.get(CUSTOMER_TOKEN_HEADER)
    if token is None:
        return ClientAccess(app, None)
    try:
        claims = check_customer_token(app, token, now)
    except InvalidToken as exc:
        raise ApiError(401, exc.problem.value, exc.message) from None
    return ClientAccess(app, claims)


class SecretKeyCache:
    """Valid secret keys (by hash) for a few seconds, so that an API call does not pay a
    database read to authenticate. A key revoked through this process is forgotten at
    once; other processes stop accepting it within `ttl_seconds`, plus the one read
    that refreshes it (at most twice `ttl_seconds`, `_Recent`)."""

    def __init__(self, ctx: ServiceContext, ttl_seconds: float) -> None:
        self.ctx = ctx
        self.ttl = ttl_seconds
        self._recent: _Recent[str | None] = _Recent(ttl_seconds)

    def app_id(self, secret_key: str, *, cached_only: bool = False) -> str | None:
        """The key's app id (None: unknown or revoked); `cached_only` as in
        `AppCache.get`. Unknown keys are not cached: a cached-only miss reads them."""
        return self._recent.get(
            secret_key,
            lambda: app_service.app_for_secret_key(self.ctx, secret_key),
            cached_only=cached_only,
            keep=lambda app_id: app_id is not None,
        )

    def forget_all(self) -> None:
        self._recent.forget_all()


def server_app_id(request: Request, keys: SecretKeyCache, *, cached_only: bool = False) -> str:
    """Authenticate a server API request (`Authorization: Bearer <secret key>`);
    `cached_only`: raise `NotCached` where it would read the database."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or len(key) > 200:
        raise ApiError(
            401,
            "secret_key_required",
            "send the app's secret key as 'Authorization: Bearer <secret key>'",
        )
    app_id = keys.app_id(key.strip(), cached_only=cached_only)
    if app_id is None:
        raise ApiError(401, "invalid_secret_key", "the secret key is unknown or revoked")
    return app_id
