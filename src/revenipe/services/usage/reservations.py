"""Reservations: hold, settle, release, read (docs/concepts/reservations.md).

A hold is decided like a track (`engine.reservations.decide_hold`) and written in the
same shared write transactions (group commit, docs/adr/0015), keyed by the customer.
Closing goes through `access.holds.close_reservation`, the same code that releases a
hold whose TTL ran out when the customer is next caught up.

Answers:
- a hold that cannot be paid is a refusal (`success: false`, nothing held, nothing
  recorded: the same idempotency key may hold later); a hold with an idempotency key
  already used returns the first answer (`replayed`), or `idempotency_key_reused` if
  the body differs;
- the first close wins: a settle of a settled reservation and a release of a released
  or expired one answer as the close did (`replayed`); a settle (of more than 0) of a
  released or expired reservation, and a release of a settled one, are refusals
  `reservation_closed` that change nothing. A settle of 0 is a release in every respect;
- a reservation of another app, or (`owner`) of another customer, is
  `reservation_not_found`, exactly as an unknown id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.amounts import (
    require_amount,
    require_catalog_id,
    require_source_and_key,
    require_text,
)
from revenipe.engine.errors import ErrorCode, InvariantViolation, RefusalCode, RevenipeError
from revenipe.engine.grants import Grant, PendingEntry, settle
from revenipe.engine.reservations import (
    HoldDecision,
    ReservationState,
    decide_hold,
    expiry_of,
    require_ttl,
)
from revenipe.services.access import holds
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import reservations as reservation_store
from revenipe.storage import sources as source_store
from revenipe.storage.reservations import ReservationRow


@dataclass(frozen=True, slots=True)
class HoldResult:
    """The answer to a hold."""

    success: bool
    reservation_id: str | None
    held: int
    remaining: int
    expires_at: datetime | None
    error: str | None
    customer_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CloseResult:
    """The answer to a settle or a release."""

    success: bool
    reservation_id: str
    state: str
    consumed: int
    released: int
    shortfall: int
    remaining: int
    usage_event_id: str | None
    error: str | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _HoldRequest:
    tracked_id: str
    value: int
    ttl_seconds: int
    access_source_id: str | None
    idempotency_key: str | None


# --- hold ------------------------------------------------------------------------------


def hold(
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    tracked_id: Any,
    value: Any,
    *,
    ttl_seconds: Any = None,
    access_source_id: Any = None,
    idempotency_key: Any = None,
    create_customer: bool = False,
    id_field: str = "id",
) -> HoldResult:
    """Set `value` of `tracked_id` aside for the customer until settled, released, or
    `ttl_seconds` (default 600, 1 to 86,400) pass. All or nothing, in the burn order of
    a track. Bad input raises `RevenipeError`; a hold the grants cannot pay is an
    answer with `success=False` and the refusal code of a track. `id_field`: what the
    caller's request calls `tracked_id`, named by its errors."""
    access_source_id, idempotency_key = require_source_and_key(access_source_id, idempotency_key)
    request = _HoldRequest(
        tracked_id=require_catalog_id(tracked_id, field=id_field),
        value=require_amount(value, field="value"),
        ttl_seconds=require_ttl(ttl_seconds),
        access_source_id=access_source_id,
        idempotency_key=idempotency_key,
    )

    def job(conn: Connection) -> HoldResult:
        return _hold_in(conn, ctx, app_id, ref, request, create_customer)

    key = (app_id if isinstance(app_id, str) else "", ref.customer_id, ref.external_id)
    try:
        return ctx.db.write_grouped(job, key=key)
    except reservation_store.ReservationKeyTaken:
        # A concurrent hold under the same key committed first: now this is a replay.
        return ctx.db.write_grouped(job, key=key)


def _hold_in(
    conn: Connection,
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    request: _HoldRequest,
    create_customer: bool,
) -> HoldResult:
    app = ctx.require_app(conn, app_id)
    now = ctx.now_for(app)
    customer = locked_customer(ctx, conn, app, ref, create=create_customer, now=now)
    if request.idempotency_key is not None:
        previous = reservation_store.find_reservation_by_key(
            conn, customer.id, request.idempotency_key
        )
        if previous is not None:
            return _replay_hold(previous, request)
    catalog = ctx.catalog(conn, app)
    entitlement_ids = holds.entitlements_of(catalog, request.tracked_id)
    if entitlement_ids is None:
        refusal = (
            RefusalCode.NOT_METERED
            if request.tracked_id in catalog.entitlements_by_id
            else RefusalCode.UNKNOWN_ENTITLEMENT
        )
        return _refused(customer.id, refusal, 0)
    if (
        request.access_source_id is not None
        and source_store.get_source(conn, customer.id, request.access_source_id) is None
    ):
        return _refused(customer.id, RefusalCode.UNKNOWN_ACCESS_SOURCE, 0)
    rows = grant_store.list_active_grants(
        conn, customer.id, entitlement_ids=entitlement_ids, source_id=request.access_source_id
    )
    settled: list[Grant] = []
    settlement: list[PendingEntry] = []
    changed: dict[str, Grant] = {}
    for row in rows:
        after, entries = settle(row.grant, now)
        settled.append(after)
        settlement.extend(entries)
        if after != row.grant:
            changed[after.id] = after
    held_before = bool(settled) or grant_store.has_grant(
        conn, customer.id, entitlement_ids, request.access_source_id
    )
    decision = decide_hold(
        settled,
        request.value,
        now,
        tracked_id=request.tracked_id,
        entitlement_order=entitlement_ids,
        access_source_id=request.access_source_id,
        held_before=held_before,
    )
    # Resets and expiries found on the way happened either way: written on a refusal too.
    changed.update((g.id, g) for g in decision.grants)
    grant_store.save_grant_states(conn, list(changed.values()))
    ledger_store.insert_entries(conn, app.id, customer.id, settlement, now)
    if not decision.success:
        outbound_emit.balances_changed(conn, catalog, app.id, customer.id, now, settlement, settled)
        return _refused(customer.id, decision.refusal, decision.remaining)
    answer = _record_hold(conn, app.id, customer.id, request, decision, now)
    outbound_emit.balances_changed(conn, catalog, app.id, customer.id, now, settlement, settled)
    return answer


def _record_hold(
    conn: Connection,
    app_id: str,
    customer_id: str,
    request: _HoldRequest,
    decision: HoldDecision,
    now: datetime,
) -> HoldResult:
    row = ReservationRow(
        id=new_id("res"),
        app_id=app_id,
        customer_id=customer_id,
        tracked_id=request.tracked_id,
        access_source_id=request.access_source_id,
        held=decision.held,
        state=ReservationState.HELD,
        hold_remaining=decision.remaining,
        idempotency_key=request.idempotency_key,
        created_at=now,
        expires_at=expiry_of(now, request.ttl_seconds),
    )
    reservation_store.insert_reservation(conn, row)
    ledger_store.insert_entries(
        conn, app_id, customer_id, decision.entries, now, reservation_id=row.id
    )
    holds.update_due(conn, customer_id)
    return _hold_answer(row, replayed=False)


def _refused(customer_id: str, refusal: RefusalCode | None, remaining: int) -> HoldResult:
    if refusal is None:
        raise InvariantViolation("a refused hold without a refusal code")
    return HoldResult(False, None, 0, remaining, None, refusal.value, customer_id)


def _hold_answer(row: ReservationRow, *, replayed: bool) -> HoldResult:
    return HoldResult(
        True, row.id, row.held, row.hold_remaining, row.expires_at, None, row.customer_id, replayed
    )


def _replay_hold(previous: ReservationRow, request: _HoldRequest) -> HoldResult:
    ttl = int((previous.expires_at - previous.created_at).total_seconds())
    same = (previous.tracked_id, previous.held, previous.access_source_id, ttl) == (
        request.tracked_id,
        request.value,
        request.access_source_id,
        request.ttl_seconds,
    )
    if not same:
        raise RevenipeError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this idempotency key was already used for a different hold "
            f"({previous.tracked_id}, value {previous.held}); use a new key",
            field="idempotency_key",
        )
    return _hold_answer(previous, replayed=True)


# --- settle and release ----------------------------------------------------------------


def settle_reservation(
    ctx: ServiceContext,
    app_id: str,
    reservation_id: Any,
    value: Any,
    *,
    owner: CustomerRef | None = None,
) -> CloseResult:
    """Consume `value` of the reservation (0: release it): from the hold first, the
    rest beyond it like a track, or, if that cannot be paid, the held amount with the
    difference as `shortfall`. The first close wins (see the module docstring)."""
    amount = require_amount(value, field="value", allow_zero=True)
    return _close(ctx, app_id, reservation_id, amount, owner)


def release_reservation(
    ctx: ServiceContext, app_id: str, reservation_id: Any, *, owner: CustomerRef | None = None
) -> CloseResult:
    """Give the whole hold back. Replays the answer if it was released or expired."""
    return _close(ctx, app_id, reservation_id, 0, owner)


def get_reservation(
    ctx: ServiceContext, app_id: str, reservation_id: Any, *, owner: CustomerRef | None = None
) -> ReservationRow:
    """The reservation as of now: one whose TTL ran out reads as `expired`, its hold
    given back (released first, if no operation had yet)."""
    row = _find(ctx, app_id, reservation_id, owner)
    if row.state != ReservationState.HELD:
        return row
    with ctx.db.read() as conn:
        due = row.expires_at <= ctx.now_for(ctx.require_app(conn, app_id))
    if not due:
        return row

    def job(conn: Connection) -> ReservationRow:
        _locked(conn, ctx, app_id, row.customer_id)
        current = reservation_store.get_reservation(conn, app_id, row.id)
        if current is None:
            raise InvariantViolation(f"reservation {row.id} vanished")
        return current

    return ctx.db.write_grouped(job, key=(app_id, row.customer_id, None))


def _find(
    ctx: ServiceContext, app_id: str, reservation_id: Any, owner: CustomerRef | None
) -> ReservationRow:
    reservation_id = require_text(reservation_id, field="reservation_id", max_length=64)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        row = reservation_store.get_reservation(conn, app.id, reservation_id)
        if row is not None and owner is not None and not _owns(conn, app.id, owner, row):
            row = None
    if row is None:
        raise RevenipeError(
            ErrorCode.RESERVATION_NOT_FOUND, f"no reservation {reservation_id!r} in this app"
        )
    return row


def _owns(conn: Connection, app_id: str, owner: CustomerRef, row: ReservationRow) -> bool:
    if owner.customer_id is not None:
        return owner.customer_id == row.customer_id
    customer = customer_store.find_customer(conn, app_id, external_id=owner.external_id)
    return customer is not None and customer.id == row.customer_id


def _locked(conn: Connection, ctx: ServiceContext, app_id: str, customer_id: str) -> datetime:
    """Lock the customer (catching it up: expired holds are released) and return now.
    Expired holds are released here too, whatever `due_at` says."""
    app = ctx.require_app(conn, app_id)
    now = ctx.now_for(app)
    locked_customer(ctx, conn, app, CustomerRef(customer_id=customer_id), create=False, now=now)
    if holds.release_expired_holds(conn, ctx.catalog(conn, app), customer_id, now):
        holds.update_due(conn, customer_id)
    return now


def _close(
    ctx: ServiceContext, app_id: str, reservation_id: Any, value: int, owner: CustomerRef | None
) -> CloseResult:
    found = _find(ctx, app_id, reservation_id, owner)

    def job(conn: Connection) -> CloseResult:
        now = _locked(conn, ctx, app_id, found.customer_id)
        row = reservation_store.get_reservation(conn, app_id, found.id)
        if row is None:
            raise InvariantViolation(f"reservation {found.id} vanished")
        if row.state != ReservationState.HELD:
            return _answer_closed(conn, ctx, app_id, row, value, now)
        app = ctx.require_app(conn, app_id)
        closed = holds.close_reservation(
            conn,
            ctx.catalog(conn, app),
            row,
            value,
            state=ReservationState.SETTLED if value else ReservationState.RELEASED,
            at=now,
            now=now,
        )
        holds.update_due(conn, row.customer_id)
        return _close_answer(closed.reservation, replayed=False)

    return ctx.db.write_grouped(job, key=(app_id, found.customer_id, None))


def _answer_closed(
    conn: Connection,
    ctx: ServiceContext,
    app_id: str,
    row: ReservationRow,
    value: int,
    now: datetime,
) -> CloseResult:
    """A settle or release of a closed reservation: the first close's answer again, or
    `reservation_closed` when it asks the opposite of what happened."""
    settling = value > 0
    if settling == (row.state == ReservationState.SETTLED):
        return _close_answer(row, replayed=True)
    app = ctx.require_app(conn, app_id)
    remaining = holds.remaining_now(
        conn, ctx.catalog(conn, app), row.customer_id, row.tracked_id, row.access_source_id, now
    )
    return CloseResult(
        success=False,
        reservation_id=row.id,
        state=row.state,
        consumed=0,
        released=0,
        shortfall=0,
        remaining=remaining,
        usage_event_id=None,
        error=RefusalCode.RESERVATION_CLOSED.value,
    )


def _close_answer(row: ReservationRow, *, replayed: bool) -> CloseResult:
    if row.close_remaining is None:
        raise InvariantViolation(f"reservation {row.id} is {row.state} without its answer")
    return CloseResult(
        success=True,
        reservation_id=row.id,
        state=row.state,
        consumed=row.consumed,
        released=row.released,
        shortfall=row.shortfall,
        remaining=row.close_remaining,
        usage_event_id=row.usage_event_id,
        error=None,
        replayed=replayed,
    )


__all__ = [
    "CloseResult",
    "HoldResult",
    "get_reservation",
    "hold",
    "release_reservation",
    "settle_reservation",
]
