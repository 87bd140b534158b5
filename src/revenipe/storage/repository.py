"""Every query the services need. Functions take an open connection (one transaction).

Rows come back as plain dataclasses or engine objects; nothing above this module sees
SQL. Writes that touch a customer's balances must first call `lock_customer`, which
serializes them per customer on PostgreSQL (SQLite serializes all writers already).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Row, and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    PendingEntry,
    ResetRule,
    Rollover,
)
from revenipe.engine.periods import Interval
from revenipe.storage.driver_sql import (
    Sql,
    execute,
    execute_many,
    fetch_all,
    pipelined,
    placeholders,
    time_in,
    time_out,
)
from revenipe.storage.schema import (
    access_sources,
    apps,
    catalog_versions,
    customers,
    grants,
    ledger_entries,
    provider_customers,
    provider_settings,
    purchase_attempts,
    reversals,
    secret_keys,
    usage_events,
    webhook_events,
)

# --- apps and keys ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppRow:
    id: str
    name: str
    token_policy: str
    token_signing_secret: str
    catalog_version: int
    created_at: datetime
    sandbox: bool = False
    """A sandbox app sells through the built-in sandbox provider and has a test clock."""
    clock_offset_seconds: int = 0
    """How far the app's test clock is ahead of the server's (sandbox apps only)."""


def insert_app(conn: Connection, app: AppRow) -> None:
    conn.execute(insert(apps).values(**_fields(app)))


def get_app(conn: Connection, app_id: str) -> AppRow | None:
    row = conn.execute(select(apps).where(apps.c.id == app_id)).first()
    return AppRow(**row._mapping) if row else None


def list_apps(conn: Connection) -> list[AppRow]:
    return [AppRow(**r._mapping) for r in conn.execute(select(apps).order_by(apps.c.created_at))]


def set_app_fields(conn: Connection, app_id: str, **values: Any) -> None:
    conn.execute(update(apps).where(apps.c.id == app_id).values(**values))


def advance_app_clock(conn: Connection, app_id: str, seconds: int) -> None:
    conn.execute(
        update(apps)
        .where(apps.c.id == app_id)
        .values(clock_offset_seconds=apps.c.clock_offset_seconds + seconds)
    )


def insert_secret_key(
    conn: Connection, key_id: str, app_id: str, key_hash: str, now: datetime
) -> None:
    conn.execute(
        insert(secret_keys).values(id=key_id, app_id=app_id, key_hash=key_hash, created_at=now)
    )


def app_id_for_secret_hash(conn: Connection, key_hash: str) -> str | None:
    row = conn.execute(
        select(secret_keys.c.app_id).where(
            secret_keys.c.key_hash == key_hash, secret_keys.c.revoked_at.is_(None)
        )
    ).first()
    return str(row.app_id) if row else None


def list_secret_keys(conn: Connection, app_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(secret_keys.c.id, secret_keys.c.created_at, secret_keys.c.revoked_at)
        .where(secret_keys.c.app_id == app_id)
        .order_by(secret_keys.c.created_at)
    )
    return [dict(r._mapping) for r in rows]


def revoke_secret_key(conn: Connection, app_id: str, key_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(secret_keys)
        .where(
            secret_keys.c.id == key_id,
            secret_keys.c.app_id == app_id,
            secret_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


# --- catalog -----------------------------------------------------------------------


def insert_catalog_version(
    conn: Connection, app_id: str, version: int, document: str, digest: str, now: datetime
) -> None:
    conn.execute(
        insert(catalog_versions).values(
            app_id=app_id, version=version, document=document, digest=digest, applied_at=now
        )
    )


def get_catalog_version(conn: Connection, app_id: str, version: int) -> Row[Any] | None:
    return conn.execute(
        select(catalog_versions).where(
            catalog_versions.c.app_id == app_id, catalog_versions.c.version == version
        )
    ).first()


def held_entitlements(conn: Connection, app_id: str) -> dict[str, str]:
    """Entitlement id -> type, for every entitlement some customer holds an active grant of."""
    rows = conn.execute(
        select(grants.c.entitlement_id, grants.c.entitlement_type)
        .where(grants.c.app_id == app_id, grants.c.status == GrantStatus.ACTIVE.value)
        .distinct()
    )
    return {r.entitlement_id: r.entitlement_type for r in rows}


def subscribed_products(conn: Connection, app_id: str, live_statuses: Sequence[str]) -> set[str]:
    """Product ids that live subscriptions hold or will move to (a pending change)."""
    rows = conn.execute(
        select(access_sources.c.product_id, access_sources.c.pending_change)
        .where(
            access_sources.c.app_id == app_id,
            access_sources.c.kind == "subscription",
            access_sources.c.status.in_(list(live_statuses)),
        )
        .distinct()
    )
    held: set[str] = set()
    for row in rows:
        if row.product_id:
            held.add(row.product_id)
        if row.pending_change:
            held.add(json.loads(row.pending_change)["to_product_id"])
    return held


# --- customers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: str
    app_id: str
    external_id: str
    anonymous: bool
    created_at: datetime
    due_at: datetime | None = None
    """The next instant one of its access sources changes by itself (sandbox renewals,
    scheduled plan changes): operations catch the customer up first when it has passed."""


def insert_customer_if_new(conn: Connection, customer: CustomerRow) -> bool:
    """Insert unless (app, external id) exists; True when this call created it."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(customers).values(**_fields(customer))
    # rowcount is not reliable for INSERT through psycopg 3 (-1): ask for the row back.
    result = conn.execute(statement.on_conflict_do_nothing().returning(customers.c.id))
    return result.first() is not None


def find_customer(
    conn: Connection,
    app_id: str,
    *,
    customer_id: str | None = None,
    external_id: str | None = None,
    lock: bool = False,
) -> CustomerRow | None:
    """A customer of `app_id` by internal or external id; `lock` takes its row lock."""
    query = select(customers).where(customers.c.app_id == app_id)
    if customer_id is not None:
        query = query.where(customers.c.id == customer_id)
    else:
        query = query.where(customers.c.external_id == external_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return CustomerRow(**row._mapping) if row else None


def list_customers(
    conn: Connection, app_id: str, *, after_id: str | None, limit: int
) -> list[CustomerRow]:
    query = select(customers).where(customers.c.app_id == app_id)
    if after_id:
        query = query.where(customers.c.id > after_id)
    rows = conn.execute(query.order_by(customers.c.id).limit(limit))
    return [CustomerRow(**r._mapping) for r in rows]


# --- access sources ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRow:
    id: str
    app_id: str
    customer_id: str
    product_id: str | None
    kind: str
    provider: str
    status: str
    started_at: datetime
    current_period_start: datetime | None
    current_period_end: datetime | None
    expires_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    created_at: datetime
    provider_ref: str | None = None
    """The provider's id for it (Stripe subscription or payment, store transaction)."""
    trial_end: datetime | None = None
    ended_at: datetime | None = None
    billing_anchor: datetime | None = None
    billing_interval: str | None = None
    payment_method_attached: bool = False
    pending_change: str | None = None
    """JSON of the engine's `PendingChange`, or None."""
    due_at: datetime | None = None
    provider_state_at: datetime | None = None
    """When the provider's state last applied was current (orders provider events)."""
    updated_at: datetime | None = None


def insert_source(conn: Connection, source: SourceRow) -> None:
    conn.execute(insert(access_sources).values(**_fields(source)))


def get_source(conn: Connection, customer_id: str, source_id: str) -> SourceRow | None:
    row = conn.execute(
        select(access_sources).where(
            access_sources.c.id == source_id, access_sources.c.customer_id == customer_id
        )
    ).first()
    return SourceRow(**row._mapping) if row else None


def find_source_by_ref(
    conn: Connection, app_id: str, provider: str, provider_ref: str
) -> SourceRow | None:
    row = conn.execute(
        select(access_sources).where(
            access_sources.c.app_id == app_id,
            access_sources.c.provider == provider,
            access_sources.c.provider_ref == provider_ref,
        )
    ).first()
    return SourceRow(**row._mapping) if row else None


def source_id_taken(conn: Connection, source_id: str) -> bool:
    """Whether any access source, of any app, has this id (a reserved id is used once)."""
    found = conn.execute(
        select(access_sources.c.id).where(access_sources.c.id == source_id)
    ).first()
    return found is not None


def update_source(conn: Connection, source: SourceRow) -> None:
    """Write every field of `source` (an access source's state changes as a whole)."""
    values = _fields(source)
    del values["id"]
    conn.execute(update(access_sources).where(access_sources.c.id == source.id).values(**values))


def sources_due(conn: Connection, customer_id: str, now: datetime) -> list[SourceRow]:
    rows = conn.execute(
        select(access_sources)
        .where(access_sources.c.customer_id == customer_id, access_sources.c.due_at <= now)
        .order_by(access_sources.c.due_at, access_sources.c.id)
    )
    return [SourceRow(**r._mapping) for r in rows]


def refresh_customer_due(conn: Connection, customer_id: str) -> None:
    """Set the customer's `due_at` to the soonest `due_at` of its sources."""
    soonest = (
        select(func.min(access_sources.c.due_at))
        .where(access_sources.c.customer_id == customer_id)
        .scalar_subquery()
    )
    conn.execute(update(customers).where(customers.c.id == customer_id).values(due_at=soonest))


def list_sources(conn: Connection, customer_id: str) -> list[SourceRow]:
    rows = conn.execute(
        select(access_sources)
        .where(access_sources.c.customer_id == customer_id)
        .order_by(access_sources.c.created_at, access_sources.c.id)
    )
    return [SourceRow(**r._mapping) for r in rows]


# --- grants ------------------------------------------------------------------------


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


def insert_grant(conn: Connection, app_id: str, customer_id: str, row: GrantRow) -> None:
    g = row.grant
    conn.execute(
        insert(grants).values(
            id=g.id,
            app_id=app_id,
            customer_id=customer_id,
            source_id=g.source_id,
            entitlement_id=g.entitlement_id,
            entitlement_type=row.entitlement_type,
            amount=g.amount,
            balance=g.balance,
            priority=g.priority,
            period_start=g.period_start,
            expires_at=g.expires_at,
            reset_interval=g.reset.interval.value if g.reset else None,
            reset_anchor=g.reset.anchor if g.reset else None,
            rollover_min=g.reset.rollover.min if g.reset else 0,
            rollover_max=g.reset.rollover.max if g.reset else 0,
            status=g.status.value,
            created_at=g.created_at,
            term_expires_at=row.term_expires_at,
            follows_period=row.follows_period,
        )
    )


def _grant_from_row(r: Any) -> GrantRow:
    reset = None
    if r.reset_interval is not None:
        reset = ResetRule(
            Interval(r.reset_interval), r.reset_anchor, Rollover(r.rollover_min, r.rollover_max)
        )
    grant = Grant(
        id=r.id,
        entitlement_id=r.entitlement_id,
        source_id=r.source_id,
        amount=r.amount,
        balance=r.balance,
        priority=r.priority,
        created_at=r.created_at,
        period_start=r.period_start,
        expires_at=r.expires_at,
        reset=reset,
        status=GrantStatus(r.status),
    )
    return GrantRow(grant, r.entitlement_type, r.term_expires_at, r.follows_period)


_GRANT_COLUMNS = (
    "id, entitlement_id, source_id, amount, balance, priority, created_at, period_start, "
    "expires_at, reset_interval, reset_anchor, rollover_min, rollover_max, status, "
    "entitlement_type"
)


def _grant_from_tuple(r: tuple[Any, ...]) -> GrantRow:
    reset = None
    if r[9] is not None:
        reset = ResetRule(Interval(r[9]), _time(r[10]), Rollover(r[11], r[12]))
    grant = Grant(
        id=r[0],
        entitlement_id=r[1],
        source_id=r[2],
        amount=r[3],
        balance=r[4],
        priority=r[5],
        created_at=_time(r[6]),
        period_start=_time(r[7]),
        expires_at=time_out(r[8]),
        reset=reset,
        status=GrantStatus(r[13]),
    )
    return GrantRow(grant, r[14])


def _time(value: Any) -> datetime:
    moment = time_out(value)
    assert moment is not None
    return moment


def active_grants(
    conn: Connection,
    customer_id: str,
    *,
    entitlement_ids: Sequence[str] | None = None,
    source_id: str | None = None,
) -> list[GrantRow]:
    """The customer's grants not yet known to be expired (they may still need settling)."""
    text = (
        f"SELECT {_GRANT_COLUMNS} FROM grants "
        "WHERE customer_id = %(customer_id)s AND status = 'active'"
    )
    params: dict[str, Any] = {"customer_id": customer_id}
    if entitlement_ids is not None:
        listed, more = placeholders("e", entitlement_ids)
        text += f" AND entitlement_id IN ({listed})"
        params.update(more)
    if source_id is not None:
        text += " AND source_id = %(source_id)s"
        params["source_id"] = source_id
    return [_grant_from_tuple(r) for r in fetch_all(conn, _sql(text), params)]


_SQL_CACHE: dict[str, Sql] = {}


def _sql(text: str) -> Sql:
    cached = _SQL_CACHE.get(text)
    if cached is None:
        cached = _SQL_CACHE[text] = Sql(text)
    return cached


def grants_by_id(conn: Connection, grant_ids: Iterable[str]) -> dict[str, GrantRow]:
    rows = conn.execute(select(grants).where(grants.c.id.in_(list(grant_ids))))
    return {r.id: _grant_from_row(r) for r in rows}


def grants_of_source(conn: Connection, source_id: str) -> list[GrantRow]:
    """Every grant an access source gave, whatever its status, oldest first."""
    rows = conn.execute(
        select(grants)
        .where(grants.c.source_id == source_id)
        .order_by(grants.c.created_at, grants.c.id)
    )
    return [_grant_from_row(r) for r in rows]


def save_grant_terms(conn: Connection, rows: Sequence[GrantRow]) -> None:
    """Write grants whose expiry or reset anchor changed along with their balance."""
    for row in rows:
        g = row.grant
        conn.execute(
            update(grants)
            .where(grants.c.id == g.id)
            .values(
                balance=g.balance,
                period_start=g.period_start,
                status=g.status.value,
                expires_at=g.expires_at,
                reset_anchor=g.reset.anchor if g.reset else None,
                term_expires_at=row.term_expires_at,
            )
        )


def has_any_grant(
    conn: Connection, customer_id: str, entitlement_ids: Sequence[str], source_id: str | None = None
) -> bool:
    query = select(grants.c.id).where(
        grants.c.customer_id == customer_id, grants.c.entitlement_id.in_(entitlement_ids)
    )
    if source_id is not None:
        query = query.where(grants.c.source_id == source_id)
    return conn.execute(query.limit(1)).first() is not None


_SAVE_GRANT = Sql(
    "UPDATE grants SET balance = %(balance)s, period_start = %(period_start)s, "
    "status = %(status)s WHERE id = %(id)s"
)


def save_grant_states(conn: Connection, states: Sequence[Grant]) -> None:
    execute_many(
        conn,
        _SAVE_GRANT,
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


# --- ledger ------------------------------------------------------------------------


_INSERT_ENTRY = Sql(
    "INSERT INTO ledger_entries (app_id, customer_id, grant_id, kind, amount, balance_after, "
    "usage_event_id, reversal_id, effective_at, recorded_at) VALUES (%(app_id)s, "
    "%(customer_id)s, %(grant_id)s, %(kind)s, %(amount)s, %(balance_after)s, "
    "%(usage_event_id)s, %(reversal_id)s, %(effective_at)s, %(recorded_at)s)"
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
) -> None:
    recorded_at = time_in(conn, now)
    execute_many(
        conn,
        _INSERT_ENTRY,
        [
            {
                "app_id": app_id,
                "customer_id": customer_id,
                "grant_id": e.grant_id,
                "kind": e.kind.value,
                "amount": e.amount,
                "balance_after": e.balance_after,
                "usage_event_id": usage_event_id if e.kind is EntryKind.CONSUMED else None,
                "reversal_id": reversal_id if e.kind is EntryKind.REVERSED else None,
                "effective_at": time_in(conn, e.effective_at),
                "recorded_at": recorded_at,
            }
            for e in entries
        ],
    )


def ledger_page(
    conn: Connection,
    app_id: str,
    *,
    customer_id: str | None = None,
    after_id: int = 0,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    query = select(ledger_entries).where(
        ledger_entries.c.app_id == app_id, ledger_entries.c.id > after_id
    )
    if customer_id is not None:
        query = query.where(ledger_entries.c.customer_id == customer_id)
    rows = conn.execute(query.order_by(ledger_entries.c.id).limit(limit))
    return [dict(r._mapping) for r in rows]


def last_entry(conn: Connection, grant_id: str, kind: EntryKind) -> int | None:
    """The amount of the grant's latest entry of `kind`, or None if it has none."""
    row = conn.execute(
        select(ledger_entries.c.amount)
        .where(ledger_entries.c.grant_id == grant_id, ledger_entries.c.kind == kind.value)
        .order_by(ledger_entries.c.id.desc())
        .limit(1)
    ).first()
    return int(row.amount) if row else None


def consumption_of_event(conn: Connection, usage_event_id: str) -> list[tuple[str, int]]:
    """(grant id, units consumed) of one usage event, in the order they were drawn."""
    rows = conn.execute(
        select(ledger_entries.c.grant_id, ledger_entries.c.amount)
        .where(
            ledger_entries.c.usage_event_id == usage_event_id,
            ledger_entries.c.kind == EntryKind.CONSUMED.value,
        )
        .order_by(ledger_entries.c.id)
    )
    return [(r.grant_id, -int(r.amount)) for r in rows]


def reversed_per_grant(conn: Connection, usage_event_id: str) -> dict[str, int]:
    """What earlier reversals of a usage event gave back, per grant.

    Two lookups by index rather than one join: joined, PostgreSQL read the whole ledger
    (a sequential scan, 70 to 120 ms at 236,000 entries in the soak) instead of using
    the partial index on `reversal_id` for the event's few reversals (ADR 0013)."""
    reversal_ids = list(
        conn.execute(
            select(reversals.c.id).where(reversals.c.usage_event_id == usage_event_id)
        ).scalars()
    )
    if not reversal_ids:
        return {}
    rows = conn.execute(
        select(ledger_entries.c.grant_id, func.sum(ledger_entries.c.amount).label("total"))
        .where(
            ledger_entries.c.reversal_id.in_(reversal_ids),
            ledger_entries.c.kind == EntryKind.REVERSED.value,
        )
        .group_by(ledger_entries.c.grant_id)
    )
    return {r.grant_id: int(r.total) for r in rows}


# --- usage events and reversals ------------------------------------------------------


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


_INSERT_USAGE_EVENT = Sql(
    "INSERT INTO usage_events (id, app_id, customer_id, tracked_id, access_source_id, "
    "requested, consumed, reversed, remaining, success, error, idempotency_key, created_at) "
    "VALUES (%(id)s, %(app_id)s, %(customer_id)s, %(tracked_id)s, %(access_source_id)s, "
    "%(requested)s, %(consumed)s, %(reversed)s, %(remaining)s, %(success)s, %(error)s, "
    "%(idempotency_key)s, %(created_at)s)"
)


class IdempotencyKeyTaken(Exception):
    """Another transaction committed a usage event under the same key first."""


def _insert_usage_event(conn: Connection, event: UsageEventRow) -> None:
    params = _fields(event)
    params["created_at"] = time_in(conn, event.created_at)
    execute(conn, _INSERT_USAGE_EVENT, params)


@contextlib.contextmanager
def _idempotency_checked(event: UsageEventRow) -> Iterator[None]:
    try:
        yield
    except (sqlite3.IntegrityError, psycopg.errors.UniqueViolation) as exc:
        # Both drivers name the constraint or its column: "...idempotency..."
        if event.idempotency_key is not None and "idempotency" in str(exc):
            raise IdempotencyKeyTaken(event.idempotency_key) from exc
        raise


def record_track(
    conn: Connection,
    event: UsageEventRow,
    states: Sequence[Grant],
    settlement: Sequence[PendingEntry],
    consumption: Sequence[PendingEntry],
) -> None:
    """Write a track's outcome: its usage event, the grants it changed, their ledger
    entries. One round trip on PostgreSQL (pipelined). Raises `IdempotencyKeyTaken` if
    the (customer, key) pair exists already."""
    now = event.created_at
    with _idempotency_checked(event), pipelined(conn):
        _insert_usage_event(conn, event)
        save_grant_states(conn, states)
        insert_entries(conn, event.app_id, event.customer_id, settlement, now)
        insert_entries(
            conn, event.app_id, event.customer_id, consumption, now, usage_event_id=event.id
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


_LOCK_FOR_TRACK = """
    SELECT c.id, a.catalog_version, u.id, u.tracked_id, u.access_source_id, u.requested,
           u.consumed, u.reversed, u.remaining, u.success, u.error, u.created_at,
           a.clock_offset_seconds, c.due_at
    FROM customers c JOIN apps a ON a.id = c.app_id
    LEFT JOIN usage_events u ON u.customer_id = c.id AND u.idempotency_key = %(key)s
    WHERE c.app_id = %(app_id)s AND c.{column} = %(customer)s
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
) -> TrackLock | None:
    """Lock an existing customer and read what a track needs, in one round trip."""
    statement = _LOCK_BY_ID if customer_id is not None else _LOCK_BY_EXTERNAL_ID
    rows = fetch_all(
        conn,
        statement,
        {
            "app_id": app_id,
            "customer": customer_id if customer_id is not None else external_id,
            "key": idempotency_key,
        },
    )
    if not rows:
        return None
    r = rows[0]
    previous = None
    if r[2] is not None:
        previous = UsageEventRow(
            id=r[2],
            app_id=app_id,
            customer_id=r[0],
            tracked_id=r[3],
            access_source_id=r[4],
            requested=r[5],
            consumed=r[6],
            reversed=r[7],
            remaining=r[8],
            success=bool(r[9]),
            error=r[10],
            idempotency_key=idempotency_key,
            created_at=_time(r[11]),
        )
    return TrackLock(
        customer_id=r[0],
        catalog_version=r[1],
        previous=previous,
        clock_offset_seconds=r[12],
        due_at=time_out(r[13]),
    )


def find_usage_event(
    conn: Connection,
    app_id: str,
    *,
    event_id: str | None = None,
    customer_id: str | None = None,
    idempotency_key: str | None = None,
) -> UsageEventRow | None:
    query = select(usage_events).where(usage_events.c.app_id == app_id)
    if event_id is not None:
        query = query.where(usage_events.c.id == event_id)
    else:
        query = query.where(
            usage_events.c.customer_id == customer_id,
            usage_events.c.idempotency_key == idempotency_key,
        )
    row = conn.execute(query).first()
    return UsageEventRow(**row._mapping) if row else None


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
    query = select(usage_events).where(usage_events.c.app_id == app_id)
    conditions = []
    if customer_id is not None:
        conditions.append(usage_events.c.customer_id == customer_id)
    if tracked_id is not None:
        conditions.append(usage_events.c.tracked_id == tracked_id)
    if since is not None:
        conditions.append(usage_events.c.created_at >= since)
    if until is not None:
        conditions.append(usage_events.c.created_at < until)
    if before_id is not None:
        conditions.append(usage_events.c.id < before_id)
    if conditions:
        query = query.where(and_(*conditions))
    rows = conn.execute(query.order_by(usage_events.c.id.desc()).limit(limit))
    return [UsageEventRow(**r._mapping) for r in rows]


def add_reversed(conn: Connection, event_id: str, amount: int) -> None:
    conn.execute(
        update(usage_events)
        .where(usage_events.c.id == event_id)
        .values(reversed=usage_events.c.reversed + amount)
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
    conn.execute(
        insert(reversals).values(
            id=reversal_id,
            app_id=app_id,
            usage_event_id=event_id,
            amount=amount,
            idempotency_key=idempotency_key,
            created_at=now,
        )
    )


def find_reversal(conn: Connection, event_id: str, idempotency_key: str) -> Row[Any] | None:
    return conn.execute(
        select(reversals).where(
            reversals.c.usage_event_id == event_id, reversals.c.idempotency_key == idempotency_key
        )
    ).first()


# --- purchases, providers, webhooks ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurchaseAttemptRow:
    """A purchase begun and not necessarily finished: a checkout session, a payment or
    setup intent (the sandbox's own, or a record of the provider's)."""

    id: str
    app_id: str
    customer_id: str
    provider: str
    product_id: str | None
    kind: str
    """payment (a one-time product), subscription, or setup (a payment method)."""
    method: str
    status: str
    client_secret_hash: str | None
    source_id: str | None
    success_url: str | None
    cancel_url: str | None
    trial: bool
    details: str | None
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None


def insert_purchase_attempt(conn: Connection, attempt: PurchaseAttemptRow) -> None:
    conn.execute(insert(purchase_attempts).values(**_fields(attempt)))


def get_purchase_attempt(
    conn: Connection, attempt_id: str, *, app_id: str | None = None
) -> PurchaseAttemptRow | None:
    query = select(purchase_attempts).where(purchase_attempts.c.id == attempt_id)
    if app_id is not None:
        query = query.where(purchase_attempts.c.app_id == app_id)
    row = conn.execute(query).first()
    return PurchaseAttemptRow(**row._mapping) if row else None


def finish_purchase_attempt(
    conn: Connection, attempt_id: str, status: str, now: datetime, source_id: str | None
) -> bool:
    """Close an open attempt; False if it was not open any more (someone else did)."""
    result = conn.execute(
        update(purchase_attempts)
        .where(purchase_attempts.c.id == attempt_id, purchase_attempts.c.status == "open")
        .values(status=status, completed_at=now, source_id=source_id)
    )
    return bool(result.rowcount)


def get_provider_settings(conn: Connection, app_id: str, provider: str) -> str | None:
    row = conn.execute(
        select(provider_settings.c.settings).where(
            provider_settings.c.app_id == app_id, provider_settings.c.provider == provider
        )
    ).first()
    return str(row.settings) if row else None


def put_provider_settings(
    conn: Connection, app_id: str, provider: str, settings: str, now: datetime
) -> None:
    existing = get_provider_settings(conn, app_id, provider)
    if existing is None:
        conn.execute(
            insert(provider_settings).values(
                app_id=app_id, provider=provider, settings=settings, updated_at=now
            )
        )
    else:
        conn.execute(
            update(provider_settings)
            .where(provider_settings.c.app_id == app_id, provider_settings.c.provider == provider)
            .values(settings=settings, updated_at=now)
        )


def delete_provider_settings(conn: Connection, app_id: str, provider: str) -> None:
    conn.execute(
        delete(provider_settings).where(
            provider_settings.c.app_id == app_id, provider_settings.c.provider == provider
        )
    )


def provider_customer_id(
    conn: Connection, app_id: str, provider: str, customer_id: str
) -> str | None:
    row = conn.execute(
        select(provider_customers.c.provider_customer_id).where(
            provider_customers.c.app_id == app_id,
            provider_customers.c.provider == provider,
            provider_customers.c.customer_id == customer_id,
        )
    ).first()
    return str(row.provider_customer_id) if row else None


def customer_for_provider_id(
    conn: Connection, app_id: str, provider: str, provider_customer_id: str
) -> str | None:
    row = conn.execute(
        select(provider_customers.c.customer_id).where(
            provider_customers.c.app_id == app_id,
            provider_customers.c.provider == provider,
            provider_customers.c.provider_customer_id == provider_customer_id,
        )
    ).first()
    return str(row.customer_id) if row else None


def link_provider_customer(
    conn: Connection,
    app_id: str,
    provider: str,
    customer_id: str,
    provider_customer_id: str,
    now: datetime,
) -> None:
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(provider_customers)
        .values(
            app_id=app_id,
            provider=provider,
            customer_id=customer_id,
            provider_customer_id=provider_customer_id,
            created_at=now,
        )
        .on_conflict_do_nothing()
    )


def record_webhook_event(
    conn: Connection,
    app_id: str,
    provider: str,
    event_id: str,
    event_type: str,
    outcome: str,
    detail: str | None,
    now: datetime,
    *,
    subject: str | None = None,
    occurred_at: datetime | None = None,
) -> bool:
    """Remember a provider event; False if it was recorded before (apply it only once).

    Called in the transaction that applies the event, so the event and its effects
    commit together or not at all. `subject` and `occurred_at` (what it is about, when
    it happened) let `webhook_events_about` read a subject's events back in order.
    """
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = conn.execute(
        dialect_insert(webhook_events)
        .values(
            app_id=app_id,
            provider=provider,
            event_id=event_id,
            type=event_type,
            outcome=outcome,
            detail=detail,
            received_at=now,
            subject=subject,
            occurred_at=occurred_at,
        )
        .on_conflict_do_nothing()
        .returning(webhook_events.c.event_id)
    )
    return result.first() is not None


@dataclass(frozen=True, slots=True)
class WebhookEventRow:
    app_id: str
    provider: str
    event_id: str
    type: str
    outcome: str
    detail: str | None
    received_at: datetime
    subject: str | None = None
    occurred_at: datetime | None = None


def webhook_events_about(
    conn: Connection, app_id: str, provider: str, subject: str
) -> list[WebhookEventRow]:
    """Every recorded event of one subject, in the order they happened (then by id)."""
    rows = conn.execute(
        select(webhook_events)
        .where(
            webhook_events.c.app_id == app_id,
            webhook_events.c.provider == provider,
            webhook_events.c.subject == subject,
        )
        .order_by(webhook_events.c.occurred_at, webhook_events.c.event_id)
    )
    return [WebhookEventRow(**r._mapping) for r in rows]


def get_webhook_event(
    conn: Connection, app_id: str, provider: str, event_id: str
) -> WebhookEventRow | None:
    row = conn.execute(
        select(webhook_events).where(
            webhook_events.c.app_id == app_id,
            webhook_events.c.provider == provider,
            webhook_events.c.event_id == event_id,
        )
    ).first()
    return WebhookEventRow(**row._mapping) if row else None


def set_webhook_outcome(
    conn: Connection, app_id: str, provider: str, event_id: str, outcome: str, detail: str | None
) -> None:
    conn.execute(
        update(webhook_events)
        .where(
            webhook_events.c.app_id == app_id,
            webhook_events.c.provider == provider,
            webhook_events.c.event_id == event_id,
        )
        .values(outcome=outcome, detail=detail)
    )


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}
