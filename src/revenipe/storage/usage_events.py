"""Usage events (tracks): table `usage_events` (their reversals: `storage.reversals`).

A track runs two round trips here (docs/adr/0007, 0012): `lock_for_track` (lock the
customer, read the app's catalog version and the event already recorded under the
idempotency key, in one statement) and `record_track` (the event, the grants it changed
and their ledger entries, pipelined into one round trip on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.grants import Grant, PendingEntry
from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    cached_sql,
    execute,
    fetch_all,
    fetch_all_together,
    fetch_each,
    fetch_one,
    pipelined,
    time_in,
    time_out,
)
from revenipe.storage.grants import CandidateQuery, GrantRow, save_balances, save_grant_states
from revenipe.storage.ledger import insert_entries
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


_EVENT = Columns(usage_events, [f.name for f in dataclasses.fields(UsageEventRow)])
_INSERT_EVENT = _EVENT.insert()
_GET_EVENT = Sql(
    f"SELECT {_EVENT.select} FROM usage_events WHERE id = %(id)s AND app_id = %(app_id)s"
)
_ADD_REVERSED = Sql("UPDATE usage_events SET reversed = reversed + %(amount)s WHERE id = %(id)s")


def _unique_violation() -> tuple[type[BaseException], ...]:
    # psycopg's class only once psycopg is loaded: SQLite processes never load it.
    psycopg = sys.modules.get("psycopg")
    return (psycopg.errors.UniqueViolation,) if psycopg is not None else ()


class IdempotencyKeyTaken(Exception):
    """Another transaction committed a usage event under the same key first."""


@contextlib.contextmanager
def _idempotency_checked(event: UsageEventRow) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, (sqlite3.IntegrityError, *_unique_violation())):
            raise
        # Both drivers name the constraint or its column: "...idempotency..."
        if event.idempotency_key is not None and "idempotency" in str(exc):
            raise IdempotencyKeyTaken(event.idempotency_key) from exc
        raise


def record_track(
    conn: Connection,
    event: UsageEventRow,
    states: Sequence[Grant],
    balances: Sequence[Grant],
    settlement: Sequence[PendingEntry],
    consumption: Sequence[PendingEntry],
) -> None:
    """Write a track's outcome: its event, the grants it changed (`balances`: only their
    balance), their entries; one round trip on PostgreSQL. `IdempotencyKeyTaken` if the
    (customer, key) pair exists already."""
    now = event.created_at
    with _idempotency_checked(event), pipelined(conn):
        execute(conn, _INSERT_EVENT, _EVENT.params(conn, event))
        save_grant_states(conn, states)
        save_balances(conn, balances)
        insert_entries(conn, event.app_id, event.customer_id, settlement, now, by_track=True)
        insert_entries(
            conn,
            event.app_id,
            event.customer_id,
            consumption,
            now,
            usage_event_id=event.id,
            by_track=True,
        )


@dataclass(frozen=True, slots=True)
class TrackLock:
    """What a track needs before deciding: the locked customer, the app's catalog
    version, and the usage event already recorded under the idempotency key, if any."""

    customer_id: str
    catalog_version: int
    previous: UsageEventRow | None
    clock_offset_seconds: int = 0
    due_at: datetime | None = None
    alerts_version: int | None = None
    """The catalog version the customer's usage-alert memory is current with."""
    candidates: list[GrantRow] | None = None
    """The rows of the `CandidateQuery` sent with the lock, when one was (read after the
    lock was taken)."""


_LOCK_HEAD = (
    "locked_customer_id",
    "catalog_version",
    "clock_offset_seconds",
    "customer_due_at",
    "customer_alerts_version",
    "previous_id",
)
"""The first columns of `_LOCK_FOR_TRACK`, by name; the usage event's (`_EVENT`) follow."""
_LOCK_FOR_TRACK = f"""
    SELECT c.id, a.catalog_version, a.clock_offset_seconds, c.due_at, c.alerts_version, u.id,
           {_EVENT.select_as("u")}
    FROM customers c JOIN apps a ON a.id = c.app_id
    LEFT JOIN usage_events u ON u.customer_id = c.id AND u.idempotency_key = %(key)s
    WHERE c.app_id = %(app_id)s AND c.{{column}} = %(customer)s
"""
_LOCK_BY_ID = Sql(_LOCK_FOR_TRACK.format(column="id"), row_lock="FOR UPDATE OF c")
_LOCK_BY_EXTERNAL_ID = Sql(_LOCK_FOR_TRACK.format(column="external_id"), row_lock="FOR UPDATE OF c")


def lock_for_track(
    conn: Connection,
    app_id: str,
    *,
    customer_id: str | None,
    external_id: str | None,
    idempotency_key: str | None,
    candidates: CandidateQuery | None = None,
) -> TrackLock | None:
    """Lock an existing customer and read what a track needs, in one round trip; with
    `candidates`, the customer's candidate grants too, in the same round trip, read
    once the lock is held (the caller checks they are the ones it needs)."""
    statement = _LOCK_BY_ID if customer_id is not None else _LOCK_BY_EXTERNAL_ID
    params = {
        "app_id": app_id,
        "customer": customer_id if customer_id is not None else external_id,
        "key": idempotency_key,
    }
    grant_rows = None
    if candidates is None:
        row = fetch_one(conn, statement, params)
    else:
        locked, grant_rows = fetch_all_together(
            conn, [(statement, params), (candidates.sql, candidates.params)]
        )
        row = locked[0] if locked else None
    if row is None:
        return None
    head = dict(zip(_LOCK_HEAD, row[: len(_LOCK_HEAD)], strict=True))
    previous = None
    if head["previous_id"] is not None:
        previous = UsageEventRow(**_EVENT.read(row[len(_LOCK_HEAD) :]))
    return TrackLock(
        customer_id=head["locked_customer_id"],
        catalog_version=head["catalog_version"],
        previous=previous,
        clock_offset_seconds=head["clock_offset_seconds"],
        due_at=time_out(head["customer_due_at"]),
        alerts_version=head["customer_alerts_version"],
        candidates=None
        if candidates is None or grant_rows is None
        else candidates.read(grant_rows),
    )


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
