"""Reservations, holds of usage with a time to live: table `reservations`.

A reservation's units are in the ledger (`held` and `released` entries naming it,
`storage.ledger`); this row is its state and the answers it gave, so that a repeated
hold (same idempotency key), settle or release is answered as the first was.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

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
from revenipe.storage.schema import reservations


@dataclass(frozen=True, slots=True)
class ReservationRow:
    id: str
    app_id: str
    customer_id: str
    tracked_id: str
    access_source_id: str | None
    held: int
    state: str
    hold_remaining: int
    """`remaining` in the hold's answer."""
    idempotency_key: str | None
    created_at: datetime
    expires_at: datetime
    requested: int = 0
    """What the settle asked (0 for a release or an expiry)."""
    consumed: int = 0
    released: int = 0
    shortfall: int = 0
    close_remaining: int | None = None
    """`remaining` in the answer of the settle, release or expiry that closed it."""
    usage_event_id: str | None = None
    closed_at: datetime | None = None


_COLUMNS = Columns(
    reservations,
    (
        "id",
        "app_id",
        "customer_id",
        "tracked_id",
        "access_source_id",
        "held",
        "state",
        "hold_remaining",
        "idempotency_key",
        "created_at",
        "expires_at",
        "requested",
        "consumed",
        "released",
        "shortfall",
        "close_remaining",
        "usage_event_id",
        "closed_at",
    ),
)
_SELECT = f"SELECT {_COLUMNS.select} FROM reservations"
_INSERT = _COLUMNS.insert()
_GET = Sql(f"{_SELECT} WHERE id = %(id)s AND app_id = %(app_id)s")
_FIND_BY_KEY = Sql(f"{_SELECT} WHERE customer_id = %(customer_id)s AND idempotency_key = %(key)s")
_LIST_EXPIRED = Sql(
    f"{_SELECT} WHERE customer_id = %(customer_id)s AND state = 'held' "
    "AND expires_at <= %(now)s ORDER BY expires_at, id"
)
_CLOSE = Sql(
    "UPDATE reservations SET state = %(state)s, requested = %(requested)s, "
    "consumed = %(consumed)s, released = %(released)s, shortfall = %(shortfall)s, "
    "close_remaining = %(close_remaining)s, usage_event_id = %(usage_event_id)s, "
    "closed_at = %(closed_at)s WHERE id = %(id)s AND state = 'held'"
)


class ReservationKeyTaken(Exception):
    """Another transaction committed a reservation under the same idempotency key first."""


def insert_reservation(conn: Connection, row: ReservationRow) -> None:
    """Insert a new reservation; raises `ReservationKeyTaken` if the customer's
    idempotency key is taken (a concurrent hold committed first)."""
    psycopg = sys.modules.get("psycopg")
    unique = (sqlite3.IntegrityError,) + (
        (psycopg.errors.UniqueViolation,) if psycopg is not None else ()
    )
    try:
        execute(conn, _INSERT, _COLUMNS.params(conn, row))
    except unique as exc:
        if row.idempotency_key is not None and "idempotency" in str(exc):
            raise ReservationKeyTaken(row.idempotency_key) from exc
        raise


def get_reservation(conn: Connection, app_id: str, reservation_id: str) -> ReservationRow | None:
    """The reservation with this id in this app (None: absent, or another app's)."""
    row = fetch_one(conn, _GET, {"id": reservation_id, "app_id": app_id})
    return ReservationRow(**_COLUMNS.read(row)) if row is not None else None


def find_reservation_by_key(
    conn: Connection, customer_id: str, idempotency_key: str
) -> ReservationRow | None:
    """The customer's reservation made under an idempotency key, if any."""
    row = fetch_one(conn, _FIND_BY_KEY, {"customer_id": customer_id, "key": idempotency_key})
    return ReservationRow(**_COLUMNS.read(row)) if row is not None else None


def list_expired_reservations(
    conn: Connection, customer_id: str, now: datetime
) -> list[ReservationRow]:
    """The customer's open reservations whose TTL ran out by `now`, soonest first."""
    params = {"customer_id": customer_id, "now": time_in(conn, now)}
    return [ReservationRow(**_COLUMNS.read(r)) for r in fetch_all(conn, _LIST_EXPIRED, params)]


def update_reservation_closed(conn: Connection, row: ReservationRow) -> bool:
    """Record how an open reservation closed (its state and answer); False if it was
    not open (the caller holds the customer's lock, so that is a bug)."""
    params = {
        "id": row.id,
        "state": row.state,
        "requested": row.requested,
        "consumed": row.consumed,
        "released": row.released,
        "shortfall": row.shortfall,
        "close_remaining": row.close_remaining,
        "usage_event_id": row.usage_event_id,
        "closed_at": time_in(conn, row.closed_at),
    }
    return execute(conn, _CLOSE, params) == 1


def iter_reservations(conn: Connection, app_id: str | None) -> Iterator[ReservationRow]:
    """Every reservation of one app (None: of every app)."""
    where = " WHERE app_id = %(app_id)s" if app_id is not None else ""
    for row in fetch_each(conn, cached_sql(f"{_SELECT}{where}"), {"app_id": app_id}):
        yield ReservationRow(**_COLUMNS.read(row))
