"""Reversal: a usage event's consumption given back to the grants that paid for it
(docs/concepts/reversal.md), in full or in part, once per idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.amounts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    require_amount,
    require_text,
)
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.grants import EntryKind, Grant, GrantStatus, PendingEntry, settle
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.usage.track import with_balance
from revenipe.storage import repository as repo

# --- reversal ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReversalResult:
    reversal_id: str | None
    usage_event_id: str
    amount: int
    """Units given back by this call (0 when nothing was left to reverse)."""
    total_reversed: int
    credits: tuple[tuple[str, int], ...]
    """(grant id, units) credited back, in order."""
    replayed: bool = False


def reverse(
    ctx: ServiceContext,
    app_id: str,
    usage_event_id: Any,
    amount: Any = None,
    *,
    idempotency_key: Any = None,
) -> ReversalResult:
    """Give back units a usage event consumed, into the exact grants that paid.

    `amount` None reverses everything not yet reversed (so a retry reverses nothing
    more). A partial reversal is made retry-safe by an idempotency key. Never more than
    was consumed: asking for more raises `reversal_exceeds_consumed`. The last grant
    drawn is refunded first. A grant that has since expired receives the credit and
    writes it off at once, so the ledger shows both.
    """
    if amount is not None:
        amount = require_amount(amount, field="amount")
    if idempotency_key is not None:
        idempotency_key = require_text(
            idempotency_key, field="idempotency_key", max_length=MAX_IDEMPOTENCY_KEY_LENGTH
        )
    event_id = require_text(usage_event_id, field="usage_event_id", max_length=64)
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        event = repo.find_usage_event(conn, app.id, event_id=event_id)
        if event is None:
            raise RevenipeError(
                ErrorCode.USAGE_EVENT_NOT_FOUND, f"no usage event {event_id!r} in this app"
            )
        locked_customer(
            ctx, conn, app, CustomerRef(customer_id=event.customer_id), create=False, now=now
        )
        # Re-read under the customer lock: a concurrent reversal may have committed.
        event = repo.find_usage_event(conn, app.id, event_id=event_id)
        assert event is not None
        if idempotency_key is not None:
            previous = repo.find_reversal(conn, event.id, idempotency_key)
            if previous is not None:
                if amount is not None and previous.amount != amount:
                    raise RevenipeError(
                        ErrorCode.IDEMPOTENCY_KEY_REUSED,
                        "this idempotency key was used for another amount",
                        field="idempotency_key",
                    )
                return ReversalResult(
                    previous.id, event.id, int(previous.amount), event.reversed, (), replayed=True
                )
        reversible = event.consumed - event.reversed
        wanted = reversible if amount is None else amount
        if wanted > reversible:
            raise RevenipeError(
                ErrorCode.REVERSAL_EXCEEDS_CONSUMED,
                f"usage event {event.id} has {reversible} unit(s) left to reverse, {wanted} asked",
                field="amount",
            )
        if wanted == 0:
            return ReversalResult(None, event.id, 0, event.reversed, ())
        credits = _plan_credits(conn, event.id, wanted)
        reversal_id = new_id("rev")
        repo.insert_reversal(conn, reversal_id, app.id, event.id, wanted, idempotency_key, now)
        rows = repo.grants_by_id(conn, [grant_id for grant_id, _ in credits])
        states: dict[str, Grant] = {}
        settlement: list[PendingEntry] = []
        refunds: list[PendingEntry] = []
        write_offs: list[PendingEntry] = []
        for grant_id, units in credits:
            grant, entries = settle(states.get(grant_id, rows[grant_id].grant), now)
            settlement.extend(entries)
            balance = grant.balance + units
            refunds.append(PendingEntry(grant_id, EntryKind.REVERSED, units, balance, now))
            if grant.status is GrantStatus.EXPIRED:
                write_offs.append(PendingEntry(grant_id, EntryKind.EXPIRED, -units, 0, now))
                balance = 0
            states[grant_id] = with_balance(grant, balance)
        repo.save_grant_states(conn, list(states.values()))
        repo.insert_entries(conn, app.id, event.customer_id, settlement, now)
        repo.insert_entries(conn, app.id, event.customer_id, refunds, now, reversal_id=reversal_id)
        repo.insert_entries(conn, app.id, event.customer_id, write_offs, now)
        repo.add_reversed(conn, event.id, wanted)
        return ReversalResult(
            reversal_id, event.id, wanted, event.reversed + wanted, tuple(credits)
        )


def _plan_credits(conn: Connection, event_id: str, wanted: int) -> list[tuple[str, int]]:
    already = repo.reversed_per_grant(conn, event_id)
    credits = []
    for grant_id, consumed in reversed(repo.consumption_of_event(conn, event_id)):
        open_units = consumed - already.get(grant_id, 0)
        take = min(open_units, wanted)
        if take > 0:
            credits.append((grant_id, take))
            wanted -= take
        if wanted == 0:
            break
    if wanted:
        raise AssertionError(f"usage event {event_id}: ledger holds less than its consumed")
    return credits
