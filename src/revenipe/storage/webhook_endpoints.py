"""Outbound webhook endpoints (where an app wants its events sent): table
`webhook_endpoints`. Not to be confused with `webhooks` (events providers send us)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_all, fetch_one, time_in
from revenipe.storage.schema import webhook_endpoints


@dataclass(frozen=True, slots=True)
class WebhookEndpointRow:
    id: str
    app_id: str
    url: str
    description: str | None
    event_types: str | None
    """A JSON list; None: every type (see `types`)."""
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def types(self) -> tuple[str, ...] | None:
        """The event types it receives; None: every type."""
        if self.event_types is None:
            return None
        return tuple(json.loads(self.event_types))

    def wants(self, event_type: str) -> bool:
        types = self.types
        return types is None or event_type in types

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets a delivery is signed with now: the current one, and the previous
        one until its overlap ends."""
        if (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        ):
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What deciding which endpoints get an event needs of one endpoint (a light row)."""

    id: str
    event_types: tuple[str, ...] | None
    enabled: bool

    def wants(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types


@lru_cache(maxsize=1024)
def parse_event_types(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


SUBSCRIPTION_COLUMNS = "id, event_types, enabled"
"""The columns `subscription` reads, in order (also in `outbound_events`' one query)."""


def subscription(row: tuple[object, ...]) -> Subscription:
    endpoint_id, event_types, enabled = row
    types = parse_event_types(event_types if isinstance(event_types, str) else None)
    return Subscription(str(endpoint_id), types, bool(enabled))


_COLUMNS = Columns(
    webhook_endpoints,
    (
        "id",
        "app_id",
        "url",
        "description",
        "event_types",
        "secret",
        "previous_secret",
        "previous_secret_expires_at",
        "enabled",
        "disabled_reason",
        "failing_since",
        "created_at",
        "updated_at",
    ),
)
_INSERT = _COLUMNS.insert()
_GET = Sql(
    f"SELECT {_COLUMNS.select} FROM webhook_endpoints WHERE id = %(id)s AND app_id = %(app_id)s"
)
_GET_ANY_APP = Sql(f"SELECT {_COLUMNS.select} FROM webhook_endpoints WHERE id = %(id)s")
_LIST = Sql(
    f"SELECT {_COLUMNS.select} FROM webhook_endpoints WHERE app_id = %(app_id)s ORDER BY id"
)
_UPDATE = Sql(
    "UPDATE webhook_endpoints SET url = %(url)s, description = %(description)s, "
    "event_types = %(event_types)s, secret = %(secret)s, "
    "previous_secret = %(previous_secret)s, "
    "previous_secret_expires_at = %(previous_secret_expires_at)s, enabled = %(enabled)s, "
    "disabled_reason = %(disabled_reason)s, failing_since = %(failing_since)s, "
    "updated_at = %(updated_at)s WHERE id = %(id)s"
)
_DELETE = Sql("DELETE FROM webhook_endpoints WHERE id = %(id)s AND app_id = %(app_id)s")
_ANY = Sql("SELECT id FROM webhook_endpoints LIMIT 1")
_SUBSCRIPTIONS = Sql(
    f"SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_endpoints WHERE app_id = %(app_id)s ORDER BY id"
)


def insert_endpoint(conn: Connection, row: WebhookEndpointRow) -> None:
    execute(conn, _INSERT, _COLUMNS.params(conn, row))


def get_endpoint(conn: Connection, app_id: str, endpoint_id: str) -> WebhookEndpointRow | None:
    row = fetch_one(conn, _GET, {"id": endpoint_id, "app_id": app_id})
    return WebhookEndpointRow(**_COLUMNS.read(row)) if row is not None else None


def get_endpoint_of_any_app(conn: Connection, endpoint_id: str) -> WebhookEndpointRow | None:
    row = fetch_one(conn, _GET_ANY_APP, {"id": endpoint_id})
    return WebhookEndpointRow(**_COLUMNS.read(row)) if row is not None else None


def list_endpoints(conn: Connection, app_id: str) -> list[WebhookEndpointRow]:
    """The app's endpoints, oldest first (an app has few: no paging)."""
    return [
        WebhookEndpointRow(**_COLUMNS.read(r)) for r in fetch_all(conn, _LIST, {"app_id": app_id})
    ]


def list_subscriptions(conn: Connection, app_id: str) -> list[Subscription]:
    """The app's endpoints, only what deciding who gets an event needs."""
    return [subscription(r) for r in fetch_all(conn, _SUBSCRIPTIONS, {"app_id": app_id})]


def save_endpoint(conn: Connection, row: WebhookEndpointRow) -> None:
    """Write an existing endpoint's changeable columns."""
    execute(conn, _UPDATE, _COLUMNS.params(conn, row))


_FAILING = Sql(
    "UPDATE webhook_endpoints SET failing_since = %(now)s "
    "WHERE id = %(id)s AND failing_since IS NULL"
)
_HEALTHY = Sql(
    "UPDATE webhook_endpoints SET failing_since = NULL "
    "WHERE id = %(id)s AND failing_since IS NOT NULL"
)
_DISABLE_IF_FAILING = Sql(
    "UPDATE webhook_endpoints SET enabled = %(false)s, disabled_reason = %(reason)s, "
    "updated_at = %(now)s WHERE id = %(id)s AND enabled = %(true)s "
    "AND failing_since IS NOT NULL AND failing_since <= %(cutoff)s"
)


def update_endpoint_health(
    conn: Connection,
    endpoint_id: str,
    *,
    delivered: bool,
    now: datetime,
    cutoff: datetime,
    reason: str,
) -> None:
    """After an attempt: a success clears `failing_since`; a failure sets it if unset,
    and disables the endpoint (with `reason`) if it has been failing since `cutoff` or
    before. Only these columns: a rotation or an edit meanwhile is kept."""
    if delivered:
        execute(conn, _HEALTHY, {"id": endpoint_id})
        return
    execute(conn, _FAILING, {"id": endpoint_id, "now": time_in(conn, now)})
    execute(
        conn,
        _DISABLE_IF_FAILING,
        {
            "id": endpoint_id,
            "now": time_in(conn, now),
            "cutoff": time_in(conn, cutoff),
            "reason": reason,
            "true": True,
            "false": False,
        },
    )


def delete_endpoint(conn: Connection, app_id: str, endpoint_id: str) -> bool:
    return execute(conn, _DELETE, {"id": endpoint_id, "app_id": app_id}) > 0


def has_any_endpoint(conn: Connection) -> bool:
    """Whether any app has an endpoint (the delivery worker idles otherwise)."""
    return fetch_one(conn, _ANY, {}) is not None
