"""Closing a reservation's hold: settled, released, or expired on the timeline
(docs/concepts/reservations.md).

An expiry is a change that falls due by itself, like a sandbox renewal: it is applied
by `catch_up` (this package) whenever an operation finds the customer's `due_at`
passed, so a hold's units are back before anything reads or spends a balance after
its TTL, with no cron. Settling and releasing (services/usage/reservations.py) close a
hold the same way, through `close_reservation`.

Runs inside the caller's write transaction, after the customer's row lock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from revenipe.catalog import Catalog, EntitlementType
from revenipe.engine.errors import InvariantViolation
from revenipe.engine.grants import Grant, settle
from revenipe.engine.reservations import CloseDecision, HeldPart, ReservationState, decide_close
from revenipe.services.context import new_id
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import reservations as reservation_store
from revenipe.storage import tracks as track_store
from revenipe.storage import usage_events as usage_store

_INSTANT = timedelta(microseconds=1)
"""The smallest step of time a timestamp column keeps."""


def entitlements_of(catalog: Catalog, tracked_id: str) -> tuple[str, ...] | None:
    """The metered entitlements a usage key or entitlement id draws on, in order; None
    when the id is not (or no longer) a metered entitlement or usage key."""
    entitlement = catalog.entitlements_by_id.get(tracked_id)
    if entitlement is not None:
        return (entitlement.id,) if entitlement.type is EntitlementType.METERED else None
    usage_key = catalog.usage_keys_by_id.get(tracked_id)
    return usage_key.entitlement_ids if usage_key is not None else None


def candidate_grants(
    conn: Connection,
    catalog: Catalog,
    customer_id: str,
    tracked_id: str,
    access_source_id: str | None,
) -> list[grant_store.GrantRow]:
    """The customer's active grants that may pay for `tracked_id` (not yet settled)."""
    entitlement_ids = entitlements_of(catalog, tracked_id)
    if entitlement_ids is None:
        return []
    return grant_store.list_active_grants(
        conn, customer_id, entitlement_ids=entitlement_ids, source_id=access_source_id
    )


def remaining_now(
    conn: Connection,
    catalog: Catalog,
    customer_id: str,
    tracked_id: str,
    access_source_id: str | None,
    now: datetime,
) -> int:
    """What the grants that may pay for `tracked_id` hold at `now` (writes nothing)."""
    total = 0
    for row in candidate_grants(conn, catalog, customer_id, tracked_id, access_source_id):
        settled, _ = settle(row.grant, now)
        if settled.is_usable(now):
            total += settled.balance
    return total


@dataclass(frozen=True, slots=True)
class Closed:
    """A reservation as it closed, and what closing it decided."""

    reservation: reservation_store.ReservationRow
    decision: CloseDecision


def close_reservation(
    conn: Connection,
    catalog: Catalog,
    reservation: reservation_store.ReservationRow,
    value: int,
    *,
    state: str,
    at: datetime,
    now: datetime,
    settle_to: datetime | None = None,
) -> Closed:
    """Close an open reservation at `at` as `state`, consuming `value` (0 for a release
    or an expiry): the decision of `engine.reservations.decide_close`, written whole.

    The grants touched are brought to `settle_to` afterwards (default `now`): an expiry
    found late stops at the next expiry, so that it is closed before any reset after it
    (see `release_expired_holds`)."""
    if reservation.state != ReservationState.HELD or state not in ReservationState.CLOSED:
        raise InvariantViolation(f"reservation {reservation.id} {reservation.state} -> {state}")
    held = ledger_store.list_held_entries(conn, reservation.id)
    parts = [HeldPart(e.grant_id, -e.amount, e.effective_at) for e in held]
    if sum(p.units for p in parts) != reservation.held:
        raise InvariantViolation(f"reservation {reservation.id}: held {reservation.held}, {parts}")
    candidates = candidate_grants(
        conn, catalog, reservation.customer_id, reservation.tracked_id, reservation.access_source_id
    )
    grants: dict[str, Grant] = {row.grant.id: row.grant for row in candidates}
    held_rows = grant_store.map_grants_by_id(conn, [p.grant_id for p in parts])
    grants.update((grant_id, row.grant) for grant_id, row in held_rows.items())
    order = entitlements_of(catalog, reservation.tracked_id) or ()
    decision = decide_close(
        parts,
        grants,
        value,
        at,
        now if settle_to is None else settle_to,
        candidates=[row.grant.id for row in candidates],
        entitlement_order=order,
    )
    event_id = None
    if decision.consumed:
        event_id = new_id("use")
        # The usage event and the grants' states; the entries follow, each linked to
        # the event or the reservation by its kind.
        track_store.record_track(
            conn,
            usage_store.UsageEventRow(
                id=event_id,
                app_id=reservation.app_id,
                customer_id=reservation.customer_id,
                tracked_id=reservation.tracked_id,
                access_source_id=reservation.access_source_id,
                # What was consumed: a shortfall is the reservation's to report.
                requested=decision.consumed,
                consumed=decision.consumed,
                reversed=0,
                remaining=decision.remaining,
                success=True,
                error=None,
                idempotency_key=None,
                created_at=now,
            ),
            decision.grants,  # whole states: a close may settle grants too
            (),
            (),
            (),
        )
    else:
        grant_store.save_grant_states(conn, decision.grants)
    ledger_store.insert_entries(
        conn,
        reservation.app_id,
        reservation.customer_id,
        decision.entries,
        now,
        usage_event_id=event_id,
        reservation_id=reservation.id,
    )
    closed = replace(
        reservation,
        state=state,
        requested=value,
        consumed=decision.consumed,
        released=decision.released,
        shortfall=decision.shortfall,
        close_remaining=decision.remaining,
        usage_event_id=event_id,
        closed_at=at,
    )
    if not reservation_store.update_reservation_closed(conn, closed):
        raise InvariantViolation(f"reservation {reservation.id} closed twice under one lock")
    if state == ReservationState.EXPIRED:
        outbound_emit.reservation_expired(conn, closed, now)
    outbound_emit.balances_changed(
        conn,
        catalog,
        reservation.app_id,
        reservation.customer_id,
        now,
        decision.entries,
        decision.grants,
    )
    return Closed(closed, decision)


def release_expired_holds(
    conn: Connection,
    catalog: Catalog,
    customer_id: str,
    now: datetime,
    *,
    before: datetime | None = None,
) -> int:
    """Release every hold of the customer whose TTL ran out by `now` (and, when given,
    `before` that instant), each at its own expiry, so resets after it see the units
    back; how many. With `before`, no grant is brought to `before` or beyond (the
    changes due then are the caller's to apply first). The caller updates the customer's
    `due_at` afterwards."""
    expired = [
        reservation
        for reservation in reservation_store.list_expired_reservations(conn, customer_id, now)
        if before is None or reservation.expires_at < before
    ]
    last = now if before is None else before - _INSTANT
    for index, reservation in enumerate(expired):
        # Each is closed on the timeline: its grants are brought only up to the next
        # expiry, else a reset between the two would run before the second is back.
        following = expired[index + 1].expires_at if index + 1 < len(expired) else last
        close_reservation(
            conn,
            catalog,
            reservation,
            0,
            state=ReservationState.EXPIRED,
            at=reservation.expires_at,
            now=now,
            settle_to=following,
        )
    return len(expired)


def update_due(conn: Connection, customer_id: str) -> None:
    """The customer's `due_at`: the soonest change due on its sources or holds."""
    customer_store.update_customer_due(conn, customer_id)
