"""Reversals, what gave a usage event's units back: table `reversals`.

Their ledger entries are in `ledger`; what a reversal gave back in total is kept on the
usage event (`usage_events.update_usage_event_reversed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, cached_sql, execute, fetch_each, fetch_one
from revenipe.storage.schema import reversals


@dataclass(frozen=True, slots=True)
class ReversalRow:
    id: str
    app_id: str
    usage_event_id: str
    amount: int
    idempotency_key: str | None
    created_at: datetime


_REVERSAL = Columns(
    reversals, ("id", "app_id", "usage_event_id", "amount", "idempotency_key", "created_at")
)
_INSERT_REVERSAL = _REVERSAL.insert()
_FIND_REVERSAL = Sql(
    f"SELECT {_REVERSAL.select} FROM reversals "
    "WHERE usage_event_id = %(usage_event_id)s AND idempotency_key = %(key)s"
)


def insert_reversal(
    conn: Connection,
    reversal_id: str,
    app_id: str,
    event_id: str,
    amount: int,
    idempotency_key: str | None,
    now: datetime,
) -> None:
    reversal = ReversalRow(reversal_id, app_id, event_id, amount, idempotency_key, now)
    execute(conn, _INSERT_REVERSAL, _REVERSAL.params(conn, reversal))


def iter_reversals(conn: Connection, app_id: str | None) -> Iterator[ReversalRow]:
    """Every reversal of one app (None: of every app)."""
    where = " WHERE app_id = %(app_id)s" if app_id is not None else ""
    sql = cached_sql(f"SELECT {_REVERSAL.select} FROM reversals{where}")
    for row in fetch_each(conn, sql, {"app_id": app_id}):
        yield ReversalRow(**_REVERSAL.read(row))


def find_reversal(conn: Connection, event_id: str, idempotency_key: str) -> ReversalRow | None:
    """The reversal of a usage event made under an idempotency key, if any."""
    row = fetch_one(conn, _FIND_REVERSAL, {"usage_event_id": event_id, "key": idempotency_key})
    return ReversalRow(**_REVERSAL.read(row)) if row is not None else None
