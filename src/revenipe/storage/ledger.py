"""The ledger, one entry per change of a grant's balance: table `ledger_entries` (and
`reversals`, read to find the entries of an event's reversals).

`insert_entry_batches` is on the track hot path (docs/adr/0007): one statement for a
batch's tracks, inside `tracks.record_track`'s pipeline on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.errors import InvariantViolation
from revenipe.engine.grants import EntryKind, PendingEntry
from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    cached_sql,
    execute,
    execute_many,
    fetch_all,
    fetch_each,
    fetch_scalar,
    placeholders,
    time_in,
    time_out,
)
from revenipe.storage.schema import ledger_entries


@dataclass(frozen=True, slots=True)
class LedgerEntryRow:
    id: int
    app_id: str
    customer_id: str
    grant_id: str
    kind: str
    amount: int
    balance_after: int
    usage_event_id: str | None
    reversal_id: str | None
    effective_at: datetime
    recorded_at: datetime
    reservation_id: str | None = None


_COLUMNS = Columns(
    ledger_entries,
    (
        "id",
        "app_id",
        "customer_id",
        "grant_id",
        "kind",
        "amount",
        "balance_after",
        "usage_event_id",
        "reversal_id",
        "effective_at",
        "recorded_at",
        "reservation_id",
    ),
)
_SELECT = f"SELECT {_COLUMNS.select} FROM ledger_entries"
_INSERT = Sql(
    "INSERT INTO ledger_entries (app_id, customer_id, grant_id, kind, amount, balance_after, "
    "usage_event_id, reversal_id, reservation_id, effective_at, recorded_at) VALUES "
    "(%(app_id)s, %(customer_id)s, %(grant_id)s, %(kind)s, %(amount)s, %(balance_after)s, "
    "%(usage_event_id)s, %(reversal_id)s, %(reservation_id)s, %(effective_at)s, "
    "%(recorded_at)s)"
)
_LAST_AMOUNT = Sql(
    "SELECT amount FROM ledger_entries WHERE grant_id = %(grant_id)s AND kind = %(kind)s "
    "ORDER BY id DESC LIMIT 1"
)
_CONSUMED = Sql(
    f"{_SELECT} WHERE usage_event_id = %(usage_event_id)s AND kind = %(kind)s ORDER BY id"
)
_CONSUMED_KIND = EntryKind.CONSUMED.value
_RESERVATION_KINDS = (EntryKind.HELD, EntryKind.RELEASED)
_HELD = Sql(f"{_SELECT} WHERE reservation_id = %(reservation_id)s AND kind = 'held' ORDER BY id")
_REVERSAL_IDS = Sql("SELECT id FROM reversals WHERE usage_event_id = %(usage_event_id)s")


def iter_entries(conn: Connection, app_id: str | None) -> Iterator[LedgerEntryRow]:
    """Every ledger entry of one app (None: of every app), oldest first."""
    where = " WHERE app_id = %(app_id)s" if app_id is not None else ""
    for row in fetch_each(conn, cached_sql(f"{_SELECT}{where} ORDER BY id"), {"app_id": app_id}):
        yield LedgerEntryRow(**_COLUMNS.read(row))


_ALERT_MEMORY_STALE = Sql(
    "UPDATE customers SET alerts_version = NULL WHERE id = %(id)s AND alerts_version IS NOT NULL"
)


def insert_entries(
    conn: Connection,
    app_id: str,
    customer_id: str,
    entries: Sequence[PendingEntry],
    now: datetime,
    *,
    usage_event_id: str | None = None,
    reversal_id: str | None = None,
    reservation_id: str | None = None,
    by_track: bool = False,
) -> None:
    """Append `entries` in order. Each entry names what it belongs to by its kind:
    `consumed` the usage event, `reversed` the reversal, `held` and `released` the
    reservation.

    A change other than a track's (`by_track`, which looks at the alerts itself) marks
    the customer's usage-alert memory as not known to be current (docs/adr/0019): the
    next track reads the alerts again instead of deciding from its own balances."""
    if entries and not by_track:
        execute(conn, _ALERT_MEMORY_STALE, {"id": customer_id})
    owners = (usage_event_id, reversal_id, reservation_id)
    insert_entry_batches(conn, [(app_id, customer_id, entries, now, owners)])


Owners = tuple[str | None, str | None, str | None]
"""The usage event, reversal and reservation entries may belong to (`insert_entries`)."""


def insert_entry_batches(
    conn: Connection, batches: Sequence[tuple[str, str, Sequence[PendingEntry], datetime, Owners]]
) -> None:
    """`insert_entries(..., by_track=True)` of many tracks in one statement, each as
    (app id, customer id, entries, time, owners), in order."""
    rows = []
    for app_id, customer_id, entries, now, (event_id, reversal_id, reservation_id) in batches:
        recorded_at = time_in(conn, now)
        rows += [
            {
                "app_id": app_id,
                "customer_id": customer_id,
                "grant_id": e.grant_id,
                "kind": e.kind.value,
                "amount": e.amount,
                "balance_after": e.balance_after,
                "usage_event_id": event_id if e.kind is EntryKind.CONSUMED else None,
                "reversal_id": reversal_id if e.kind is EntryKind.REVERSED else None,
                "reservation_id": reservation_id if e.kind in _RESERVATION_KINDS else None,
                "effective_at": time_in(conn, e.effective_at),
                "recorded_at": recorded_at,
            }
            for e in entries
        ]
    execute_many(conn, _INSERT, rows)


def list_ledger_entries(
    conn: Connection,
    app_id: str,
    *,
    customer_id: str | None = None,
    after_id: int = 0,
    limit: int = 1000,
) -> list[LedgerEntryRow]:
    """A page of the app's (or one customer's) entries in id order, after `after_id`."""
    text = f"{_SELECT} WHERE app_id = %(app_id)s AND id > %(after_id)s"
    if customer_id is not None:
        text += " AND customer_id = %(customer_id)s"
    params = {"app_id": app_id, "after_id": after_id, "customer_id": customer_id, "limit": limit}
    rows = fetch_all(conn, cached_sql(f"{text} ORDER BY id LIMIT %(limit)s"), params)
    return [LedgerEntryRow(**_COLUMNS.read(r)) for r in rows]


def list_customer_entries(
    conn: Connection,
    customer_id: str,
    *,
    entitlement_ids: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[LedgerEntryRow]:
    """One customer's entries, newest first, before `before_id` (a page), of the grants
    of `entitlement_ids` (ended ones too) only when given, effective in [since, until)
    when given: read backwards along the customer's (customer_id, id) index, so a page
    costs its own rows plus those the filters skip, never the app's ledger."""
    text = f"{_SELECT} WHERE customer_id = %(customer_id)s"
    params: dict[str, Any] = {"customer_id": customer_id, "limit": limit}
    if before_id is not None:
        text += " AND id < %(before_id)s"
        params["before_id"] = before_id
    if entitlement_ids is not None:
        if not entitlement_ids:
            return []
        listed, grant_params = placeholders("e", entitlement_ids)
        text += (
            " AND grant_id IN (SELECT id FROM grants WHERE customer_id = %(customer_id)s "
            f"AND entitlement_id IN ({listed}))"
        )
        params.update(grant_params)
    if since is not None:
        text += " AND effective_at >= %(since)s"
        params["since"] = time_in(conn, since)
    if until is not None:
        text += " AND effective_at < %(until)s"
        params["until"] = time_in(conn, until)
    rows = fetch_all(conn, cached_sql(f"{text} ORDER BY id DESC LIMIT %(limit)s"), params)
    return [LedgerEntryRow(**_COLUMNS.read(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class EntrySum:
    """A chart's point of a grant's ledger: the entries of one span of time summed, or
    one entry that starts a period (`granted`, `reset`) on its own."""

    grant_id: str
    last_effective_at: datetime
    amount: int
    starts_period: bool
    balance_after: int
    """The balance the entry left (a period's start only; 0 for a sum)."""


_START = "CASE WHEN kind IN ('granted', 'reset') THEN id ELSE 0 END"
_SUMS_OF = (
    f"SELECT grant_id, {_START}, max(effective_at), sum(amount), max(balance_after) "
    "FROM ledger_entries WHERE customer_id = %(customer_id)s AND effective_at >= %(since)s "
    f"GROUP BY grant_id, {_START}, "
)
_SUMS = {
    "postgresql": Sql(
        _SUMS_OF + "floor(extract(epoch FROM effective_at - %(since)s) / %(seconds)s)"
    ),
    "sqlite": Sql(
        _SUMS_OF + "CAST((julianday(effective_at) - julianday(%(since)s)) * 86400 / %(seconds)s "
        "AS INTEGER)"
    ),
}


def list_customer_entry_sums(
    conn: Connection, customer_id: str, *, since: datetime, seconds: int
) -> list[EntrySum]:
    """The customer's entries effective at or after `since`, summed per grant and span
    of `seconds` seconds counted from `since` (but each entry that starts a period, on
    its own), oldest first: a chart's points however long the history, in one pass
    along the customer's index."""
    params = {"customer_id": customer_id, "since": time_in(conn, since), "seconds": seconds}
    sums = [
        EntrySum(str(grant), _required(time_out(at)), int(amount), bool(start), int(after))
        for grant, start, at, amount, after in fetch_all(conn, _SUMS[conn.dialect.name], params)
    ]
    sums.sort(key=lambda s: s.last_effective_at)
    return sums


def _required(moment: datetime | None) -> datetime:
    if moment is None:
        raise InvariantViolation("a ledger entry without effective_at")
    return moment


def find_last_entry_amount(conn: Connection, grant_id: str, kind: EntryKind) -> int | None:
    """The amount of the grant's latest entry of `kind`, or None if it has none."""
    amount = fetch_scalar(conn, _LAST_AMOUNT, {"grant_id": grant_id, "kind": kind.value})
    return int(amount) if amount is not None else None


def list_consumed_entries(conn: Connection, usage_event_id: str) -> list[LedgerEntryRow]:
    """The `consumed` entries of one usage event, in the order its grants were drawn."""
    rows = fetch_all(conn, _CONSUMED, {"usage_event_id": usage_event_id, "kind": _CONSUMED_KIND})
    return [LedgerEntryRow(**_COLUMNS.read(r)) for r in rows]


def map_reversed_per_grant(conn: Connection, usage_event_id: str) -> dict[str, int]:
    """What earlier reversals of a usage event gave back, grant id -> units.

    Two lookups by index rather than one join: joined, PostgreSQL read the whole ledger
    (a sequential scan, 70 to 120 ms at 236,000 entries in the soak) instead of using
    the partial index on `reversal_id` for the event's few reversals (ADR 0013)."""
    reversal_ids = [
        reversal_id
        for (reversal_id,) in fetch_all(conn, _REVERSAL_IDS, {"usage_event_id": usage_event_id})
    ]
    if not reversal_ids:
        return {}
    listed, params = placeholders("r", reversal_ids)
    text = (
        "SELECT grant_id, sum(amount) FROM ledger_entries "
        f"WHERE reversal_id IN ({listed}) AND kind = %(kind)s GROUP BY grant_id"
    )
    params["kind"] = EntryKind.REVERSED.value
    return {grant_id: int(total) for grant_id, total in fetch_all(conn, cached_sql(text), params)}


def list_held_entries(conn: Connection, reservation_id: str) -> list[LedgerEntryRow]:
    """The `held` entries of one reservation, in the order its grants were drawn."""
    rows = fetch_all(conn, _HELD, {"reservation_id": reservation_id})
    return [LedgerEntryRow(**_COLUMNS.read(r)) for r in rows]
