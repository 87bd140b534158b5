"""Usage events (tracks): table `usage_events` (their reversals: `storage.reversals`).

What a track itself runs (its lock and the writes of its outcome) is in
`storage.tracks`; here the events are read, listed and marked as reversed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    cached_sql,
    execute,
    fetch_all,
    fetch_each,
    fetch_one,
    time_in,
)
from revenipe.storage.schema import usage_events


@dataclass(frozen=True, slots=True)
class UsageEventRow:
    id: str
    app_id: str
    customer_id: str
    tracked_id: str
    access_source_id: str | None
    requested: int
    consumed: int
    reversed: int
    remaining: int
    success: bool
    error: str | None
    idempotency_key: str | None
    created_at: datetime
    action: str | None = None
    """A priced action (catalog `costs`): then `tracked_id` is its usage key, `requested`
    counts the key's units, and `unit_price` is what one action cost then."""
    unit_price: int | None = None


EVENT_COLUMNS = Columns(usage_events, [f.name for f in dataclasses.fields(UsageEventRow)])
"""The table's columns, read into a `UsageEventRow` (and written by `tracks.record_track`)."""
_EVENT = EVENT_COLUMNS
_GET_EVENT = Sql(
    f"SELECT {_EVENT.select} FROM usage_events WHERE id = %(id)s AND app_id = %(app_id)s"
)
_ADD_REVERSED = Sql("UPDATE usage_events SET reversed = reversed + %(amount)s WHERE id = %(id)s")


def get_usage_event(conn: Connection, app_id: str, event_id: str) -> UsageEventRow | None:
    """A usage event by id, if it is the app's."""
    row = fetch_one(conn, _GET_EVENT, {"id": event_id, "app_id": app_id})
    return UsageEventRow(**_EVENT.read(row)) if row is not None else None


def list_usage_events(
    conn: Connection,
    app_id: str,
    *,
    customer_id: str | None,
    tracked_id: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: str | None,
    limit: int,
) -> list[UsageEventRow]:
    """A page of the app's usage events, newest id first, filtered by what is given."""
    text = f"SELECT {_EVENT.select} FROM usage_events WHERE app_id = %(app_id)s"
    params: dict[str, Any] = {"app_id": app_id, "limit": limit}
    filters = {
        "customer_id = %(customer_id)s": ("customer_id", customer_id),
        "tracked_id = %(tracked_id)s": ("tracked_id", tracked_id),
        "created_at >= %(since)s": ("since", time_in(conn, since)),
        "created_at < %(until)s": ("until", time_in(conn, until)),
        "id < %(before_id)s": ("before_id", before_id),
    }
    for condition, (name, value) in filters.items():
        if value is not None:
            text += f" AND {condition}"
            params[name] = value
    rows = fetch_all(conn, cached_sql(f"{text} ORDER BY id DESC LIMIT %(limit)s"), params)
    return [UsageEventRow(**_EVENT.read(r)) for r in rows]


def iter_usage_events(conn: Connection, app_id: str | None) -> Iterator[UsageEventRow]:
    """Every usage event of one app (None: of every app)."""
    where = " WHERE app_id = %(app_id)s" if app_id is not None else ""
    sql = cached_sql(f"SELECT {_EVENT.select} FROM usage_events{where}")
    for row in fetch_each(conn, sql, {"app_id": app_id}):
        yield UsageEventRow(**_EVENT.read(row))


def list_repeated_idempotency_keys(
    conn: Connection, app_id: str | None
) -> list[tuple[str, str, int]]:
    """(customer id, key, count) of every idempotency key under more than one usage event
    (the unique index forbids it: `revenipe verify` looks anyway)."""
    where = " AND app_id = %(app_id)s" if app_id is not None else ""
    sql = cached_sql(
        "SELECT customer_id, idempotency_key, COUNT(*) FROM usage_events "
        f"WHERE idempotency_key IS NOT NULL{where} "
        "GROUP BY customer_id, idempotency_key HAVING COUNT(*) > 1"
    )
    return [
        (customer, key, int(count))
        for customer, key, count in fetch_all(conn, sql, {"app_id": app_id})
    ]


def update_usage_event_reversed(conn: Connection, event_id: str, amount: int) -> None:
    """Add `amount` to what the event's reversals gave back (added in SQL)."""
    execute(conn, _ADD_REVERSED, {"id": event_id, "amount": amount})
