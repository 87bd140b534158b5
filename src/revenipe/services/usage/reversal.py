"""Reversal: a usage event's consumption given back to the grants that paid for it
(docs/concepts/reversal.md), in full or in part, once per idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from revenipe.engine.amounts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    require_amount,
    require_text,
)
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.usage import amount_to_reverse, decide_reversal
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import reversals as reversal_store
from revenipe.storage import usage_events as usage_store

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
        event = usage_store.get_usage_event(conn, app.id, event_id=event_id)
        if event is None:
            raise RevenipeError(
                ErrorCode.USAGE_EVENT_NOT_FOUND, f"no usage event {event_id!r} in this app"
            )
        locked_customer(
            ctx, conn, app, CustomerRef(customer_id=event.customer_id), create=False, now=now
        )
        # Re-read under the customer lock: a concurrent reversal may have committed.
        event = usage_store.get_usage_event(conn, app.id, event_id=event_id)
        if event is None:
            raise InvariantViolation(
                f"usage event {event_id} vanished: usage events are never deleted"
            )
        if idempotency_key is not None:
            previous = reversal_store.find_reversal(conn, event.id, idempotency_key)
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
        # Nothing left, or too much asked: answered from the event alone, before its
        # ledger entries are read.
        wanted = amount_to_reverse(event.id, event.consumed, event.reversed, amount)
        if wanted == 0:
            return ReversalResult(None, event.id, 0, event.reversed, ())
        consumption = [
            (entry.grant_id, -entry.amount)
            for entry in ledger_store.list_consumed_entries(conn, event.id)
        ]
        rows = grant_store.map_grants_by_id(conn, [grant_id for grant_id, _ in consumption])
        decision = decide_reversal(
            usage_event_id=event.id,
            consumed=event.consumed,
            reversed_before=event.reversed,
            consumption=consumption,
            reversed_per_grant=ledger_store.map_reversed_per_grant(conn, event.id),
            grants={grant_id: row.grant for grant_id, row in rows.items()},
            amount=wanted,
            now=now,
        )
        reversal_id = new_id("rev")
        reversal_store.insert_reversal(
            conn, reversal_id, app.id, event.id, decision.amount, idempotency_key, now
        )
        grant_store.save_grant_states(conn, decision.grants)
        ledger_store.insert_entries(conn, app.id, event.customer_id, decision.settlement, now)
        ledger_store.insert_entries(
            conn, app.id, event.customer_id, decision.refunds, now, reversal_id=reversal_id
        )
        ledger_store.insert_entries(conn, app.id, event.customer_id, decision.write_offs, now)
        usage_store.update_usage_event_reversed(conn, event.id, decision.amount)
        outbound_emit.balances_changed(
            conn,
            ctx.catalog(conn, app),
            app.id,
            event.customer_id,
            now,
            decision.settlement,
            decision.grants,
        )
        return ReversalResult(
            reversal_id,
            event.id,
            decision.amount,
            decision.total_reversed,
            tuple((credit.grant_id, credit.units) for credit in decision.credits),
        )
