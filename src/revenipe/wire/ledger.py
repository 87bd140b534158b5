"""The ledger export (one entry per change of a grant's balance, oldest first) and the
command line's report of the ledger's invariants checked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from revenipe.wire.common import Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.usage.verify import VerifyReport
    from revenipe.storage import ledger as ledger_store


class LedgerEntryOut(TypedDict):
    id: int
    client_id: str
    grant_id: str
    kind: str
    amount: int
    balance_after: int
    usage_event_id: str | None
    reversal_id: str | None
    effective_at: Timestamp
    recorded_at: Timestamp


class LedgerPage(TypedDict):
    entries: list[LedgerEntryOut]
    next_cursor: str | None


class LedgerVerified(TypedDict):
    """`revenipe verify`: what was checked, and every broken invariant found."""

    ok: bool
    grants: int
    ledger_entries: int
    usage_events: int
    problems: list[str]


def ledger_entry_to_wire(row: ledger_store.LedgerEntryRow) -> LedgerEntryOut:
    return {
        "id": row.id,
        "client_id": row.customer_id,
        "grant_id": row.grant_id,
        "kind": row.kind,
        "amount": row.amount,
        "balance_after": row.balance_after,
        "usage_event_id": row.usage_event_id,
        "reversal_id": row.reversal_id,
        "effective_at": timestamp(row.effective_at),
        "recorded_at": timestamp(row.recorded_at),
    }


def ledger_page_to_wire(entries: Sequence[ledger_store.LedgerEntryRow], limit: int) -> LedgerPage:
    """A page of the export; `next_cursor` (the last id, as text) is set when it is full."""
    return {
        "entries": [ledger_entry_to_wire(e) for e in entries],
        "next_cursor": str(entries[-1].id) if len(entries) == limit else None,
    }


def verified_to_wire(report: VerifyReport) -> LedgerVerified:
    return {
        "ok": report.ok,
        "grants": report.checked_grants,
        "ledger_entries": report.checked_entries,
        "usage_events": report.checked_usage_events,
        "problems": report.problems,
    }
