"""The ledger invariants, checked against the whole database (or one app).

1. Every grant's balance equals the sum of its ledger entries.
2. No grant and no entry's running balance is ever below zero; expired grants hold 0.
3. Each entry's `balance_after` equals the running sum of its grant's entries.
4. Each usage event's `consumed` equals what its entries consumed; a refusal consumed
   nothing; a success consumed exactly what was requested.
5. Each usage event's `reversed` equals its reversal entries, and never exceeds
   `consumed`; each reversal's amount equals its entries.
6. An idempotency key was applied once: at most one usage event per (customer, key).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, Table, func, select

from revenipe.services.context import ServiceContext
from revenipe.storage.schema import grants, ledger_entries, reversals, usage_events


@dataclass
class VerifyReport:
    checked_grants: int = 0
    checked_entries: int = 0
    checked_usage_events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(ctx: ServiceContext, app_id: str | None = None) -> VerifyReport:
    """Check every invariant; the report names each broken row."""
    report = VerifyReport()
    with ctx.db.read() as conn:
        if app_id is not None:
            ctx.require_app(conn, app_id)

        def scoped(table: Table, query: Select[Any]) -> Select[Any]:
            return query.where(table.c.app_id == app_id) if app_id is not None else query

        running: dict[str, int] = defaultdict(int)
        entry_query = scoped(ledger_entries, select(ledger_entries).order_by(ledger_entries.c.id))
        consumed_by_event: dict[str, int] = defaultdict(int)
        reversed_by_reversal: dict[str, int] = defaultdict(int)
        for entry in conn.execute(entry_query):
            report.checked_entries += 1
            running[entry.grant_id] += entry.amount
            if running[entry.grant_id] != entry.balance_after:
                report.problems.append(
                    f"ledger_entries.id={entry.id}: balance_after {entry.balance_after} but "
                    f"running sum of grant {entry.grant_id} is {running[entry.grant_id]}"
                )
            if running[entry.grant_id] < 0:
                report.problems.append(
                    f"ledger_entries.id={entry.id}: grant {entry.grant_id} below zero "
                    f"({running[entry.grant_id]})"
                )
            if entry.kind == "consumed":
                if entry.usage_event_id is None or entry.amount >= 0:
                    report.problems.append(
                        f"ledger_entries.id={entry.id}: consumed entry must be negative and "
                        "name its usage event"
                    )
                else:
                    consumed_by_event[entry.usage_event_id] -= entry.amount
            if entry.kind == "reversed":
                if entry.reversal_id is None or entry.amount <= 0:
                    report.problems.append(
                        f"ledger_entries.id={entry.id}: reversed entry must be positive and "
                        "name its reversal"
                    )
                else:
                    reversed_by_reversal[entry.reversal_id] += entry.amount

        for grant in conn.execute(scoped(grants, select(grants))):
            report.checked_grants += 1
            total = running.get(grant.id, 0)
            if grant.balance != total:
                report.problems.append(
                    f"grants.id={grant.id}: balance {grant.balance} but ledger sum {total}"
                )
            if grant.balance < 0:
                report.problems.append(f"grants.id={grant.id}: balance below zero")
            if grant.status in ("expired", "revoked") and grant.balance != 0:
                report.problems.append(
                    f"grants.id={grant.id}: {grant.status} but holds {grant.balance}"
                )

        reversal_rows = list(conn.execute(scoped(reversals, select(reversals))))
        reversed_by_event: dict[str, int] = defaultdict(int)
        for reversal in reversal_rows:
            reversed_by_event[reversal.usage_event_id] += reversal.amount
            entries_total = reversed_by_reversal.get(reversal.id, 0)
            if entries_total != reversal.amount:
                report.problems.append(
                    f"reversals.id={reversal.id}: amount {reversal.amount} but its entries "
                    f"gave back {entries_total}"
                )

        for event in conn.execute(scoped(usage_events, select(usage_events))):
            report.checked_usage_events += 1
            consumed = consumed_by_event.get(event.id, 0)
            if consumed != event.consumed:
                report.problems.append(
                    f"usage_events.id={event.id}: consumed {event.consumed} but its entries "
                    f"consumed {consumed}"
                )
            if event.success and event.consumed != event.requested:
                report.problems.append(
                    f"usage_events.id={event.id}: success but consumed {event.consumed} of "
                    f"{event.requested}"
                )
            if not event.success and event.consumed != 0:
                report.problems.append(
                    f"usage_events.id={event.id}: refusal that consumed {event.consumed}"
                )
            if event.reversed != reversed_by_event.get(event.id, 0):
                report.problems.append(
                    f"usage_events.id={event.id}: reversed {event.reversed} but reversals "
                    f"sum to {reversed_by_event.get(event.id, 0)}"
                )
            if event.reversed > event.consumed:
                report.problems.append(
                    f"usage_events.id={event.id}: reversed {event.reversed} more than "
                    f"consumed {event.consumed}"
                )

        duplicates = conn.execute(
            scoped(
                usage_events,
                select(
                    usage_events.c.customer_id, usage_events.c.idempotency_key, func.count()
                ).where(usage_events.c.idempotency_key.is_not(None)),
            )
            .group_by(usage_events.c.customer_id, usage_events.c.idempotency_key)
            .having(func.count() > 1)
        )
        for row in duplicates:
            report.problems.append(
                f"usage_events: idempotency key {row.idempotency_key!r} of customer "
                f"{row.customer_id} applied {row[2]} times"
            )
    return report
