"""Grants, what a customer holds of an entitlement: table `grants`.

`list_active_grants`, `save_balances` and `save_grant_states` are on the track hot path
(docs/adr/0007): one statement each, and the two saves run inside
`tracks.record_track`'s pipeline on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.grants import Grant, GrantStatus, ResetRule, Rollover
from revenipe.engine.periods import Interval
from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    cached_sql,
    execute,
    execute_many,
    fetch_all,
    fetch_each,
    fetch_one,
    placeholders,
    time_in,
)
from revenipe.storage.schema import grants


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A grant as stored: the engine's `Grant` plus what storage keeps beside it."""

    grant: Grant
    entitlement_type: str
    term_expires_at: datetime | None = None
    """The grant's own expiry (its product's `expires_after`); `grant.expires_at` is the
    sooner of that and the end of its source's access."""
    follows_period: bool = False
    """Resets with its subscription's billing period (`reset: period`)."""

    @staticmethod
    def read(row: Sequence[Any]) -> GrantRow:
        """A row of `GRANT_COLUMNS.select`."""
        return _grant(row)


GRANT_COLUMNS = Columns(
    grants,
    (
        "id",
        "entitlement_id",
        "source_id",
        "amount",
        "balance",
        "priority",
        "created_at",
        "period_start",
        "expires_at",
        "reset_interval",
        "reset_anchor",
        "rollover_min",
        "rollover_max",
        "status",
        "entitlement_type",
        "term_expires_at",
        "follows_period",
    ),
)
"""A grant's columns as `GrantRow.read` reads them."""
_OWNER = Columns(grants, ("app_id", "customer_id", *GRANT_COLUMNS.names))
_INSERT = _OWNER.insert()
_SELECT = f"SELECT {GRANT_COLUMNS.select} FROM grants"
_LIST_OF_SOURCE = Sql(f"{_SELECT} WHERE source_id = %(source_id)s ORDER BY created_at, id")
_SAVE_STATE = Sql(
    "UPDATE grants SET balance = %(balance)s, period_start = %(period_start)s, "
    "status = %(status)s WHERE id = %(id)s"
)
_SAVE_BALANCE = Sql("UPDATE grants SET balance = %(balance)s WHERE id = %(id)s")
"""Only the balance: on SQLite, an UPDATE that names `status` rewrites the grants index
that holds it even when the value stays, one page more in every track's commit."""
_SAVE_TERMS = Sql(
    "UPDATE grants SET balance = %(balance)s, period_start = %(period_start)s, "
    "status = %(status)s, expires_at = %(expires_at)s, reset_anchor = %(reset_anchor)s, "
    "term_expires_at = %(term_expires_at)s WHERE id = %(id)s"
)
_HELD = Sql(
    "SELECT DISTINCT entitlement_id, entitlement_type FROM grants "
    "WHERE app_id = %(app_id)s AND status = 'active'"
)


def _grant(row: Sequence[Any]) -> GrantRow:
    r = GRANT_COLUMNS.read(row)
    reset = None
    if r["reset_interval"] is not None:
        reset = ResetRule(
            Interval(r["reset_interval"]),
            r["reset_anchor"],
            Rollover(r["rollover_min"], r["rollover_max"]),
        )
    grant = Grant(
        id=r["id"],
        entitlement_id=r["entitlement_id"],
        source_id=r["source_id"],
        amount=r["amount"],
        balance=r["balance"],
        priority=r["priority"],
        created_at=r["created_at"],
        period_start=r["period_start"],
        expires_at=r["expires_at"],
        reset=reset,
        status=GrantStatus(r["status"]),
    )
    return GrantRow(grant, r["entitlement_type"], r["term_expires_at"], r["follows_period"])


def _values(row: GrantRow) -> dict[str, Any]:
    """A grant's columns by name (times not yet converted)."""
    g = row.grant
    return {
        "id": g.id,
        "entitlement_id": g.entitlement_id,
        "source_id": g.source_id,
        "amount": g.amount,
        "balance": g.balance,
        "priority": g.priority,
        "created_at": g.created_at,
        "period_start": g.period_start,
        "expires_at": g.expires_at,
        "reset_interval": g.reset.interval.value if g.reset else None,
        "reset_anchor": g.reset.anchor if g.reset else None,
        "rollover_min": g.reset.rollover.min if g.reset else 0,
        "rollover_max": g.reset.rollover.max if g.reset else 0,
        "status": g.status.value,
        "entitlement_type": row.entitlement_type,
        "term_expires_at": row.term_expires_at,
        "follows_period": row.follows_period,
    }


def insert_grant(conn: Connection, app_id: str, customer_id: str, row: GrantRow) -> None:
    values = {"app_id": app_id, "customer_id": customer_id, **_values(row)}
    execute(conn, _INSERT, _OWNER.encode(conn, values))


def list_active_grants(
    conn: Connection,
    customer_id: str,
    *,
    entitlement_ids: Sequence[str] | None = None,
    source_id: str | None = None,
) -> list[GrantRow]:
    """The customer's grants not yet known to be expired (they may still need settling)."""
    text = f"{_SELECT} WHERE customer_id = %(customer_id)s AND status = 'active'"
    params: dict[str, Any] = {"customer_id": customer_id}
    if entitlement_ids is not None:
        if not entitlement_ids:
            return []
        listed, more = placeholders("e", entitlement_ids)
        text += f" AND entitlement_id IN ({listed})"
        params.update(more)
    if source_id is not None:
        text += " AND source_id = %(source_id)s"
        params["source_id"] = source_id
    return [_grant(r) for r in fetch_all(conn, cached_sql(text), params)]


def map_grants_by_id(conn: Connection, grant_ids: Iterable[str]) -> dict[str, GrantRow]:
    """The grants with these ids, keyed by id (absent ids are left out)."""
    listed, params = placeholders("g", grant_ids)
    if not params:
        return {}
    rows = fetch_all(conn, cached_sql(f"{_SELECT} WHERE id IN ({listed})"), params)
    return {row.grant.id: row for row in map(_grant, rows)}


def list_grants_of_source(conn: Connection, source_id: str) -> list[GrantRow]:
    """Every grant an access source gave, whatever its status, oldest first."""
    return [_grant(r) for r in fetch_all(conn, _LIST_OF_SOURCE, {"source_id": source_id})]


def has_grant(
    conn: Connection, customer_id: str, entitlement_ids: Sequence[str], source_id: str | None = None
) -> bool:
    """Whether the customer has any grant, whatever its status, of these entitlements
    (and of this access source, when given)."""
    if not entitlement_ids:
        return False
    listed, params = placeholders("e", entitlement_ids)
    params["customer_id"] = customer_id
    text = (
        "SELECT id FROM grants WHERE customer_id = %(customer_id)s "
        f"AND entitlement_id IN ({listed})"
    )
    if source_id is not None:
        text += " AND source_id = %(source_id)s"
        params["source_id"] = source_id
    return fetch_one(conn, cached_sql(f"{text} LIMIT 1"), params) is not None


def map_held_entitlement_types(conn: Connection, app_id: str) -> dict[str, str]:
    """Entitlement id -> type, for every entitlement some customer holds an active grant of."""
    return {
        entitlement_id: entitlement_type
        for entitlement_id, entitlement_type in fetch_all(conn, _HELD, {"app_id": app_id})
    }


def iter_grants(conn: Connection, app_id: str | None) -> Iterator[GrantRow]:
    """Every grant of one app (None: of every app), whatever its status."""
    where = " WHERE app_id = %(app_id)s" if app_id is not None else ""
    for row in fetch_each(conn, cached_sql(f"{_SELECT}{where}"), {"app_id": app_id}):
        yield _grant(row)


def save_grant_states(conn: Connection, states: Sequence[Grant]) -> None:
    """Write the balance, period and status of grants a track or reversal changed."""
    execute_many(
        conn,
        _SAVE_STATE,
        [
            {
                "id": g.id,
                "balance": g.balance,
                "period_start": time_in(conn, g.period_start),
                "status": g.status.value,
            }
            for g in states
        ],
    )


def save_balances(conn: Connection, states: Sequence[Grant]) -> None:
    """Write the balance of grants whose period and status did not change (what a
    track's decision changes: `engine.usage.decide_track` moves balances only)."""
    execute_many(conn, _SAVE_BALANCE, [{"id": g.id, "balance": g.balance} for g in states])


def save_grant_terms(conn: Connection, rows: Sequence[GrantRow]) -> None:
    """Write grants whose expiry or reset anchor changed along with their balance."""
    params = []
    for row in rows:
        g = row.grant
        params.append(
            {
                "id": g.id,
                "balance": g.balance,
                "period_start": time_in(conn, g.period_start),
                "status": g.status.value,
                "expires_at": time_in(conn, g.expires_at),
                "reset_anchor": time_in(conn, g.reset.anchor if g.reset else None),
                "term_expires_at": time_in(conn, row.term_expires_at),
            }
        )
    execute_many(conn, _SAVE_TERMS, params)
