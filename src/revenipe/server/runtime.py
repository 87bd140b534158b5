"""What the request handlers share in one server process."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from revenipe.server.errors import ApiError
from revenipe.server.limits import RateLimiter, retry_after
from revenipe.server.security import AppCache, ClientAccess, SecretKeyCache, client_access
from revenipe.server.settings import ServerSettings
from revenipe.services.context import ServiceContext


@dataclass
class Runtime:
    ctx: ServiceContext
    settings: ServerSettings
    app_cache: AppCache = field(init=False)
    secret_keys: SecretKeyCache = field(init=False)
    anonymous_by_address: RateLimiter = field(init=False)
    anonymous_by_app: RateLimiter = field(init=False)
    client_by_address: RateLimiter = field(init=False)
    client_by_app: RateLimiter = field(init=False)
    client_by_customer: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.app_cache = AppCache(self.ctx, self.settings.app_cache_seconds)
        self.secret_keys = SecretKeyCache(self.ctx, self.settings.app_cache_seconds)
        self.anonymous_by_address = RateLimiter(
            self.settings.anonymous_logins_per_minute_per_address
        )
        self.anonymous_by_app = RateLimiter(self.settings.anonymous_logins_per_minute_per_app)
        self.client_by_address = _ten_second_buckets(
            self.settings.client_requests_per_minute_per_address
        )
        self.client_by_app = _ten_second_buckets(self.settings.client_requests_per_minute_per_app)
        self.client_by_customer = _ten_second_buckets(
            self.settings.client_requests_per_minute_per_customer
        )

    def client_access(self, request: Request, *, cached_only: bool = False) -> ClientAccess:
        """Authenticate a client-protocol request, then apply the per-customer limit
        (after the token is verified: a forged token cannot spend a victim's budget).
        `cached_only`: raise `NotCached` where it would read the database."""
        who = client_access(request, self.app_cache, self.ctx.now(), cached_only=cached_only)
        if who.claims is not None:
            wait = self.client_by_customer.take(f"{who.app.id}|{who.claims.customer_id}")
            if wait > 0:
                raise ApiError(
                    429,
                    "rate_limited",
                    "too many requests for this customer; retry after the given seconds",
                    headers={"Retry-After": retry_after(wait)},
                )
        return who

    def customer_app_id(
        self, request: Request, customer_id: str, *, cached_only: bool = False
    ) -> str:
        """Authenticate a client-protocol request that acts for `customer_id` (the
        customer its token names, unless the app's token policy is open): the app's id."""
        who = self.client_access(request, cached_only=cached_only)
        who.require_customer(customer_id)
        return who.app.id

    def limit_anonymous_login(self, app_id: str, request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        wait = max(
            self.anonymous_by_address.take(f"{app_id}|{address}"),
            self.anonymous_by_app.take(app_id),
        )
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "too many anonymous logins; retry after the given seconds",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )


def _ten_second_buckets(per_minute: int) -> RateLimiter:
    return RateLimiter(per_minute, burst=max(1, per_minute // 6))
