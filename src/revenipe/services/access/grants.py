"""Grants opened, ended and moved for an access source (ledger entries for each).

Runs inside the caller's write transaction, after the customer's row lock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, EntitlementType, Product, ResetKind
from revenipe.engine.errors import InvariantViolation
from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    PendingEntry,
    ResetRule,
    extend,
    settle,
)
from revenipe.engine.periods import Interval
from revenipe.services.context import new_id
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import sources as source_store


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The sooner of two optional instants (None is "never")."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# --- grants ---------------------------------------------------------------------------


def insert_grant(
    conn: Connection,
    app_id: str,
    customer_id: str,
    source_id: str,
    entitlement_id: str,
    entitlement_type: EntitlementType,
    amount: int,
    priority: int,
    start: datetime,
    now: datetime,
    *,
    term_expires_at: datetime | None = None,
    access_ends_at: datetime | None = None,
    reset: ResetRule | None = None,
    follows_period: bool = False,
    as_of: datetime | None = None,
) -> str:
    """One grant beginning at `start` (at or before `now`), brought up to `now`.

    The granted entry is effective at `start`; resets and expiry between `start` and
    `now` are written at once, so a grant made late is what it would have been if made
    on time. `as_of` (between `start` and `now`) brings it only that far: for a grant
    whose source is taken back at that instant next.
    """
    grant = Grant(
        id=new_id("grt"),
        entitlement_id=entitlement_id,
        source_id=source_id,
        amount=amount,
        balance=amount,
        priority=priority,
        created_at=start,
        period_start=start,
        expires_at=earliest(term_expires_at, access_ends_at),
        reset=reset,
    )
    row = grant_store.GrantRow(grant, entitlement_type.value, term_expires_at, follows_period)
    grant_store.insert_grant(conn, app_id, customer_id, row)
    if amount:
        entry = PendingEntry(grant.id, EntryKind.GRANTED, amount, amount, start)
        ledger_store.insert_entries(conn, app_id, customer_id, [entry], now)
    # A grant that is born expired is written off at once, like any other expiry.
    settled, entries = settle(grant, as_of or now)
    if entries or settled != grant:
        grant_store.save_grant_states(conn, [settled])
        ledger_store.insert_entries(conn, app_id, customer_id, entries, now)
    return grant.id


def grant_product(
    conn: Connection,
    app_id: str,
    customer_id: str,
    source_id: str,
    catalog: Catalog,
    product: Product,
    start: datetime,
    now: datetime,
    *,
    access_ends_at: datetime | None = None,
    period_anchor: datetime | None = None,
    priority: int | None = None,
    as_of: datetime | None = None,
) -> tuple[str, ...]:
    """The grants of `product` for one source, beginning at `start`.

    `reset: period` grants reset with the billing period counted from `period_anchor`
    (default `start`); other resets count from `start`. Each grant's own expiry
    (`expires_after`) counts from `start`; none pays past `access_ends_at`.
    """
    grant_ids = []
    for spec in product.grants:
        entitlement = catalog.entitlements_by_id[spec.entitlement_id]
        reset = None
        follows_period = spec.reset is ResetKind.PERIOD
        if follows_period:
            if product.recurring_interval is None:
                raise InvariantViolation(
                    f"product {product.id}: the catalog let a period reset on a one-off product"
                )
            reset = ResetRule(product.recurring_interval, period_anchor or start, spec.rollover)
        elif spec.reset is not ResetKind.NEVER:
            reset = ResetRule(Interval(spec.reset.value), start, spec.rollover)
        grant_ids.append(
            insert_grant(
                conn,
                app_id,
                customer_id,
                source_id,
                entitlement.id,
                entitlement.type,
                spec.amount or 0,
                spec.priority if priority is None else priority,
                start,
                now,
                term_expires_at=spec.expires_after.after(start) if spec.expires_after else None,
                access_ends_at=access_ends_at,
                reset=reset,
                follows_period=follows_period,
                as_of=as_of,
            )
        )
    return tuple(grant_ids)


def end_grants(
    conn: Connection, source: source_store.SourceRow, at: datetime, now: datetime
) -> None:
    """The source's grants stop paying at `at` for good (its product changed, or the
    source ended): what is left then is written off at `at`."""
    rows: list[grant_store.GrantRow] = []
    entries: list[PendingEntry] = []
    for row in grant_store.list_grants_of_source(conn, source.id):
        grant = row.grant
        if grant.status is GrantStatus.REVOKED:
            continue
        if grant.status is GrantStatus.EXPIRED:
            # Already written off: make its end final, so no renewal revives it.
            if row.term_expires_at != grant.expires_at:
                rows.append(replace(row, term_expires_at=grant.expires_at))
            continue
        ending = replace(grant, expires_at=earliest(grant.expires_at, at))
        settled, new_entries = settle(ending, now)
        rows.append(replace(row, grant=settled, term_expires_at=settled.expires_at))
        entries.extend(new_entries)
    grant_store.save_grant_terms(conn, rows)
    ledger_store.insert_entries(conn, source.app_id, source.customer_id, entries, now)


def move_access_end(
    conn: Connection,
    source: source_store.SourceRow,
    access_ends_at: datetime | None,
    now: datetime,
) -> None:
    """The source now gives access until `access_ends_at`: each grant pays until the
    sooner of that and its own expiry. A grant the old end had written off comes back
    when the new end is later (a renewal confirmed after the period ended)."""
    rows: list[grant_store.GrantRow] = []
    entries: list[PendingEntry] = []
    for row in grant_store.list_grants_of_source(conn, source.id):
        grant = row.grant
        target = earliest(row.term_expires_at, access_ends_at)
        if grant.status is GrantStatus.REVOKED or grant.expires_at == target:
            continue
        written_off = 0
        if grant.status is GrantStatus.EXPIRED:
            last = ledger_store.find_last_entry_amount(conn, grant.id, EntryKind.EXPIRED)
            written_off = -last if last is not None else 0
        moved, revived = extend(grant, target, written_off)
        settled, later = settle(moved, now)
        if settled != grant:
            rows.append(replace(row, grant=settled))
            entries.extend(revived)
            entries.extend(later)
    grant_store.save_grant_terms(conn, rows)
    ledger_store.insert_entries(conn, source.app_id, source.customer_id, entries, now)
