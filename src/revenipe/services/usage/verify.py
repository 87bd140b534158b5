"""The ledger invariants, checked against the whole database (or one app).

1. Every grant's balance equals the sum of its ledger entries.
2. No grant and no entry's running balance is ever below zero; expired grants hold 0.
3. Each entry's `balance_after` equals the running sum of its grant's entries.
4. Each usage event's `consumed` equals what its entries consumed; a refusal consumed
   nothing; a success consumed exactly what was requested.
5. Each usage event's `reversed` equals its reversal entries, and never exceeds
   `consumed`; each reversal's amount equals its entries.
6. An idempotency key was applied once: at most one usage event per (customer, key).
7. Holds balance (docs/concepts/reservations.md): each reservation's `held` entries
   add up to what it held; a closed one's `released` entries give all of it back, an
   open one's give nothing back yet; what its settle consumed is its usage event's.
   So, over the ledger: held - released = what the open reservations hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Connection

from revenipe.engine.grants import EntryKind, GrantStatus
from revenipe.engine.reservations import ReservationState
from revenipe.services.context import ServiceContext
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import reservations as reservation_store
from revenipe.storage import reversals as reversal_store
from revenipe.storage import usage_events as usage_store
from revenipe.storage.ledger import LedgerEntryRow
from revenipe.storage.usage_events import UsageEventRow


class Invariant(StrEnum):
    """The rule a problem breaks (numbers as in the module docstring)."""

    GRANT_BALANCE = "grant_balance"
    """1: a grant's balance is the sum of its ledger entries."""
    NOT_NEGATIVE = "not_negative"
    """2: no balance, held or running, is below zero."""
    ENDED_GRANT_EMPTY = "ended_grant_empty"
    """2: an expired or revoked grant holds nothing."""
    RUNNING_BALANCE = "running_balance"
    """3: an entry's `balance_after` is its grant's running sum."""
    ENTRY_SHAPE = "entry_shape"
    """4, 5: a consumed entry is negative and names its usage event; a reversed entry is
    positive and names its reversal."""
    EVENT_CONSUMED = "event_consumed"
    """4: a usage event consumed what its entries consumed, all of it or (refused) none."""
    EVENT_REVERSED = "event_reversed"
    """5: a usage event's `reversed` is its reversals' sum, at most what it consumed."""
    REVERSAL_AMOUNT = "reversal_amount"
    """5: a reversal's amount is what its entries gave back."""
    IDEMPOTENT = "idempotent"
    """6: an idempotency key was applied once."""
    HOLDS_BALANCE = "holds_balance"
    """7: a reservation's held and released entries match its state and amounts."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken invariant: the rule, the row that breaks it, and the two values that
    disagree (`found` in the row, `expected` by the rule; credits or counts), when the
    rule compares two."""

    invariant: Invariant
    table: str
    row_id: str | int | None
    """The row's id (a ledger entry's is an integer); None for a rule over several rows."""
    detail: str
    """What is wrong, for a person."""
    found: int | None = None
    expected: int | None = None

    def __str__(self) -> str:
        where = self.table if self.row_id is None else f"{self.table}.id={self.row_id}"
        return f"{where}: {self.detail}"


@dataclass
class VerifyReport:
    """How many rows `verify` read, and every problem it found, in the order found."""

    checked_grants: int = 0
    checked_entries: int = 0
    checked_usage_events: int = 0
    checked_reservations: int = 0
    found: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Each problem as one line: what `revenipe verify` prints and reports."""
        return [str(problem) for problem in self.found]

    @property
    def ok(self) -> bool:
        return not self.found


def verify(ctx: ServiceContext, app_id: str | None = None) -> VerifyReport:
    """Check every invariant of the module docstring, over one app's rows or the whole
    database; the report names each broken row. Raises `app_not_found` for an unknown
    app; a broken invariant is reported, never raised."""
    report = VerifyReport()
    with ctx.db.read() as conn:
        if app_id is not None:
            ctx.require_app(conn, app_id)
        ledger = _sum_ledger(conn, app_id, report)
        _check_grants(conn, app_id, ledger, report)
        reversed_by_event = _check_reversals(conn, app_id, ledger, report)
        _check_usage_events(conn, app_id, ledger, reversed_by_event, report)
        _check_idempotency(conn, app_id, report)
        _check_reservations(conn, app_id, ledger, report)
    return report


@dataclass
class _Ledger:
    """What the ledger's entries add up to: per grant (running), per usage event
    (consumed) and per reversal (given back)."""

    running: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    consumed_by_event: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    reversed_by_reversal: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    held_by_reservation: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    released_by_reservation: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


def _sum_ledger(conn: Connection, app_id: str | None, report: VerifyReport) -> _Ledger:
    """Read every entry in order, checking each against its grant's running sum (3, 2)
    and its kind's shape (4, 5), and add up what it did."""
    ledger = _Ledger()
    for entry in ledger_store.iter_entries(conn, app_id):
        report.checked_entries += 1
        ledger.running[entry.grant_id] += entry.amount
        report.found.extend(_check_running(entry, ledger.running[entry.grant_id]))
        report.found.extend(_count_entry(entry, ledger))
    return ledger


def _check_running(entry: LedgerEntryRow, running: int) -> Iterable[Problem]:
    """The entry's `balance_after` is its grant's running sum, never below zero."""
    if running != entry.balance_after:
        yield Problem(
            Invariant.RUNNING_BALANCE,
            "ledger_entries",
            entry.id,
            f"balance_after {entry.balance_after} but running sum of grant {entry.grant_id} "
            f"is {running}",
            found=entry.balance_after,
            expected=running,
        )
    if running < 0:
        yield Problem(
            Invariant.NOT_NEGATIVE,
            "ledger_entries",
            entry.id,
            f"grant {entry.grant_id} below zero ({running})",
            found=running,
        )


def _count_entry(entry: LedgerEntryRow, ledger: _Ledger) -> Iterable[Problem]:
    """Add a consumed entry to its usage event, a reversed one to its reversal; either
    of the wrong sign, or naming neither, is a problem instead."""
    if entry.kind == EntryKind.CONSUMED:
        if entry.usage_event_id is None or entry.amount >= 0:
            yield Problem(
                Invariant.ENTRY_SHAPE,
                "ledger_entries",
                entry.id,
                "consumed entry must be negative and name its usage event",
                found=entry.amount,
            )
        else:
            ledger.consumed_by_event[entry.usage_event_id] -= entry.amount
    if entry.kind in (EntryKind.HELD, EntryKind.RELEASED):
        sign = -1 if entry.kind == EntryKind.HELD else 1
        if entry.reservation_id is None or entry.amount * sign <= 0:
            yield Problem(
                Invariant.ENTRY_SHAPE,
                "ledger_entries",
                entry.id,
                f"{entry.kind} entry must be {'negative' if sign < 0 else 'positive'} "
                "and name its reservation",
                found=entry.amount,
            )
        elif entry.kind == EntryKind.HELD:
            ledger.held_by_reservation[entry.reservation_id] -= entry.amount
        else:
            ledger.released_by_reservation[entry.reservation_id] += entry.amount
    if entry.kind == EntryKind.REVERSED:
        if entry.reversal_id is None or entry.amount <= 0:
            yield Problem(
                Invariant.ENTRY_SHAPE,
                "ledger_entries",
                entry.id,
                "reversed entry must be positive and name its reversal",
                found=entry.amount,
            )
        else:
            ledger.reversed_by_reversal[entry.reversal_id] += entry.amount


def _check_grants(
    conn: Connection, app_id: str | None, ledger: _Ledger, report: VerifyReport
) -> None:
    """Each grant holds its ledger sum (1), never below zero, nothing once ended (2)."""
    for row in grant_store.iter_grants(conn, app_id):
        grant = row.grant
        report.checked_grants += 1
        grant_id: str = grant.id
        balance: int = grant.balance
        total = ledger.running.get(grant_id, 0)
        if balance != total:
            report.found.append(
                Problem(
                    Invariant.GRANT_BALANCE,
                    "grants",
                    grant_id,
                    f"balance {balance} but ledger sum {total}",
                    found=balance,
                    expected=total,
                )
            )
        if balance < 0:
            report.found.append(
                Problem(
                    Invariant.NOT_NEGATIVE, "grants", grant_id, "balance below zero", found=balance
                )
            )
        if grant.status in (GrantStatus.EXPIRED, GrantStatus.REVOKED) and balance != 0:
            report.found.append(
                Problem(
                    Invariant.ENDED_GRANT_EMPTY,
                    "grants",
                    grant_id,
                    f"{grant.status} but holds {balance}",
                    found=balance,
                    expected=0,
                )
            )


def _check_reversals(
    conn: Connection, app_id: str | None, ledger: _Ledger, report: VerifyReport
) -> dict[str, int]:
    """Each reversal's amount is what its entries gave back (5); returns what the
    reversals of each usage event add up to."""
    reversed_by_event: defaultdict[str, int] = defaultdict(int)
    for reversal in reversal_store.iter_reversals(conn, app_id):
        amount: int = reversal.amount
        reversed_by_event[reversal.usage_event_id] += amount
        given_back = ledger.reversed_by_reversal.get(reversal.id, 0)
        if given_back != amount:
            report.found.append(
                Problem(
                    Invariant.REVERSAL_AMOUNT,
                    "reversals",
                    reversal.id,
                    f"amount {amount} but its entries gave back {given_back}",
                    found=amount,
                    expected=given_back,
                )
            )
    return reversed_by_event


def _check_usage_events(
    conn: Connection,
    app_id: str | None,
    ledger: _Ledger,
    reversed_by_event: dict[str, int],
    report: VerifyReport,
) -> None:
    """Each usage event consumed what its entries did (4) and reversed what its
    reversals did, never more than it consumed (5)."""
    for event in usage_store.iter_usage_events(conn, app_id):
        report.checked_usage_events += 1
        report.found.extend(_check_consumed(event, ledger.consumed_by_event.get(event.id, 0)))
        report.found.extend(_check_reversed(event, reversed_by_event.get(event.id, 0)))


def _check_consumed(event: UsageEventRow, by_entries: int) -> Iterable[Problem]:
    """A usage event row's `consumed` against its entries and its outcome."""
    event_id: str = event.id
    consumed: int = event.consumed
    requested: int = event.requested
    if consumed != by_entries:
        yield Problem(
            Invariant.EVENT_CONSUMED,
            "usage_events",
            event_id,
            f"consumed {consumed} but its entries consumed {by_entries}",
            found=consumed,
            expected=by_entries,
        )
    if event.success and consumed != requested:
        yield Problem(
            Invariant.EVENT_CONSUMED,
            "usage_events",
            event_id,
            f"success but consumed {consumed} of {requested}",
            found=consumed,
            expected=requested,
        )
    if not event.success and consumed != 0:
        yield Problem(
            Invariant.EVENT_CONSUMED,
            "usage_events",
            event_id,
            f"refusal that consumed {consumed}",
            found=consumed,
            expected=0,
        )


def _check_reversed(event: UsageEventRow, by_reversals: int) -> Iterable[Problem]:
    """A usage event row's `reversed` against its reversals and what it consumed."""
    event_id: str = event.id
    reversed_: int = event.reversed
    consumed: int = event.consumed
    if reversed_ != by_reversals:
        yield Problem(
            Invariant.EVENT_REVERSED,
            "usage_events",
            event_id,
            f"reversed {reversed_} but reversals sum to {by_reversals}",
            found=reversed_,
            expected=by_reversals,
        )
    if reversed_ > consumed:
        yield Problem(
            Invariant.EVENT_REVERSED,
            "usage_events",
            event_id,
            f"reversed {reversed_} more than consumed {consumed}",
            found=reversed_,
            expected=consumed,
        )


def _check_idempotency(conn: Connection, app_id: str | None, report: VerifyReport) -> None:
    """No (customer, idempotency key) holds more than one usage event (6)."""
    for customer_id, key, times in usage_store.list_repeated_idempotency_keys(conn, app_id):
        report.found.append(
            Problem(
                Invariant.IDEMPOTENT,
                "usage_events",
                None,
                f"idempotency key {key!r} of customer {customer_id} applied {times} times",
                found=times,
                expected=1,
            )
        )


def _check_reservations(
    conn: Connection, app_id: str | None, ledger: _Ledger, report: VerifyReport
) -> None:
    """Holds balance (7): what each reservation held and gave back, by its entries."""
    open_held = 0
    for reservation in reservation_store.iter_reservations(conn, app_id):
        report.checked_reservations += 1
        held = ledger.held_by_reservation.get(reservation.id, 0)
        released = ledger.released_by_reservation.get(reservation.id, 0)
        is_open = reservation.state == ReservationState.HELD
        expected_back = 0 if is_open else reservation.held
        open_held += reservation.held if is_open else 0
        if held != reservation.held:
            report.found.append(
                Problem(
                    Invariant.HOLDS_BALANCE,
                    "reservations",
                    reservation.id,
                    f"held {reservation.held} but its entries hold {held}",
                    found=reservation.held,
                    expected=held,
                )
            )
        if released != expected_back:
            report.found.append(
                Problem(
                    Invariant.HOLDS_BALANCE,
                    "reservations",
                    reservation.id,
                    f"{reservation.state} but its entries gave back {released} of "
                    f"{reservation.held}",
                    found=released,
                    expected=expected_back,
                )
            )
        if reservation.consumed != ledger.consumed_by_event.get(
            reservation.usage_event_id or "", 0
        ):
            report.found.append(
                Problem(
                    Invariant.HOLDS_BALANCE,
                    "reservations",
                    reservation.id,
                    f"consumed {reservation.consumed} but its usage event consumed "
                    f"{ledger.consumed_by_event.get(reservation.usage_event_id or '', 0)}",
                    found=reservation.consumed,
                )
            )
    outstanding = sum(ledger.held_by_reservation.values()) - sum(
        ledger.released_by_reservation.values()
    )
    if outstanding != open_held:
        report.found.append(
            Problem(
                Invariant.HOLDS_BALANCE,
                "reservations",
                None,
                f"the ledger holds {outstanding} for reservations, the open ones hold {open_held}",
                found=outstanding,
                expected=open_held,
            )
        )
