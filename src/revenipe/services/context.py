"""What every operation receives: the database, the clock and the catalog cache."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from revenipe.catalog import Catalog, parse_catalog
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.providers.stripe_gateway import StripeClients
from revenipe.storage import apps as app_store
from revenipe.storage import catalogs as catalog_store
from revenipe.storage.database import Database


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A prefixed id that sorts by creation time (microseconds, then 48 random bits)."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(6)}"


def app_time(server_now: datetime, clock_offset_seconds: int) -> datetime:
    if not clock_offset_seconds:
        return server_now
    return server_now + timedelta(seconds=clock_offset_seconds)


@dataclass
class CustomerIds:
    """Customer ids by app and external id, as tracks found them (`services.usage.track`):
    a track naming its customer by external id locks it by id once this process knows
    it, a primary-key lookup instead of one on (app, external id). A customer's external
    id never changes and customers are never deleted, so an entry holds for as long as
    its database does; a lock by id that finds nobody (a database replaced under a
    running process) falls back to the external id, and the entry is replaced. At most
    `limit` entries: when full, it starts again empty; a limit of 0 remembers nothing."""

    limit: int = 100_000
    _ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, app_id: str, external_id: str) -> str | None:
        return self._ids.get((app_id, external_id))

    def remember(self, app_id: str, external_id: str, customer_id: str) -> None:
        if self.limit <= 0:
            return
        ids = self._ids
        if len(ids) >= self.limit and (app_id, external_id) not in ids:
            ids.clear()
        ids[(app_id, external_id)] = customer_id


@dataclass
class CatalogCache:
    """Parsed catalogs by (app id, version). Versions are immutable, so never stale."""

    _entries: dict[tuple[str, int], Catalog] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _newest: dict[str, Catalog] = field(default_factory=dict)
    _newest_version: dict[str, int] = field(default_factory=dict)

    def newest(self, app_id: str) -> Catalog | None:
        """The catalog of the app's highest version read so far, if any: a guess at the
        current one (a track reads ahead with it, and checks it against the version its
        lock reads)."""
        return self._newest.get(app_id)

    def get(self, conn: Connection, app_id: str, version: int) -> Catalog:
        key = (app_id, version)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        if version == 0:
            catalog = Catalog()
        else:
            row = catalog_store.get_catalog_version(conn, app_id, version)
            if row is None:
                raise InvariantViolation(f"app {app_id} has no catalog version {version}")
            catalog = parse_catalog(json.loads(row.document))
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
                self._newest.clear()
                self._newest_version.clear()
            self._entries[key] = catalog
            if version >= self._newest_version.get(app_id, -1):
                self._newest_version[app_id] = version
                self._newest[app_id] = catalog
        return catalog


@dataclass
class ServiceContext:
    """The database, the clock (injectable for tests and sandbox clocks), the caches,
    and the Stripe clients (their HTTP client injectable for tests)."""

    db: Database
    clock: Callable[[], datetime] = utc_now
    catalogs: CatalogCache = field(default_factory=CatalogCache)
    customer_ids: CustomerIds = field(default_factory=CustomerIds)
    stripe: StripeClients = field(default_factory=StripeClients)

    def now(self) -> datetime:
        """The server's time (customer tokens, rate limits: never a test clock)."""
        return self.clock()

    def now_for(self, app: app_store.AppRow) -> datetime:
        """The app's time: the server's, plus the test clock's lead in a sandbox app.

        Everything a balance depends on (resets, expiry, renewals) runs on it.
        """
        return app_time(self.clock(), app.clock_offset_seconds)

    def require_app(self, conn: Connection, app_id: str) -> app_store.AppRow:
        if not isinstance(app_id, str):
            raise RevenipeError(ErrorCode.APP_NOT_FOUND, f"no app with id {app_id!r}")
        return app_store.require_app(conn, app_id)

    def catalog(self, conn: Connection, app: app_store.AppRow) -> Catalog:
        return self.catalogs.get(conn, app.id, app.catalog_version)
