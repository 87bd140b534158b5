"""The life of one grant over time: periodic resets with rollover, then expiry.

A grant holds a balance for its current period. Nothing mutates it on a schedule: when
the grant is next touched at time `now`, `settle` replays every boundary that passed
since it was last written, and returns the ledger entries that record them. The result
depends only on the grant and `now`, so a database left alone for months is right the
moment it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from revenipe.engine.errors import InvariantViolation
from revenipe.engine.periods import Interval, period_index, period_start


class EntryKind(StrEnum):
    """The kinds of ledger entry. Every change to a balance is exactly one of these."""

    GRANTED = "granted"
    CONSUMED = "consumed"
    RESET = "reset"
    EXPIRED = "expired"
    REVERSED = "reversed"
    ADJUSTED = "adjusted"


class GrantStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Rollover:
    """What carries over at a reset, on top of the refill.

    ``carried = min(max, max(leftover, min))`` and the balance after the reset is
    ``amount + carried``. The defaults (0, 0) mean "refill to the granted amount".
    See docs/adr/0003-rollover.md.
    """

    min: int = 0
    max: int = 0

    def balance_after_reset(self, amount: int, leftover: int) -> int:
        return amount + min(self.max, max(leftover, self.min))


@dataclass(frozen=True, slots=True)
class ResetRule:
    """Refill every `interval`, counted from `anchor`."""

    interval: Interval
    anchor: datetime
    rollover: Rollover = Rollover()


@dataclass(frozen=True, slots=True)
class Grant:
    """One bucket: the amount of one entitlement that one access source gives."""

    id: str
    entitlement_id: str
    source_id: str
    amount: int
    """The amount granted at the start and at each reset (0 for boolean entitlements)."""
    balance: int
    priority: int
    created_at: datetime
    period_start: datetime
    """Start of the period that `balance` belongs to (the grant's start if no reset)."""
    expires_at: datetime | None = None
    reset: ResetRule | None = None
    status: GrantStatus = GrantStatus.ACTIVE

    def is_usable(self, now: datetime) -> bool:
        """Whether this grant may pay at `now` (it must have been settled to `now`)."""
        return self.status is GrantStatus.ACTIVE and (
            self.expires_at is None or now < self.expires_at
        )

    @property
    def period_end(self) -> datetime | None:
        """End (exclusive) of the current period, or None when the grant never resets."""
        if self.reset is None:
            return None
        index = period_index(self.reset.anchor, self.reset.interval, self.period_start)
        return period_start(self.reset.anchor, self.reset.interval, index + 1)


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """A ledger entry decided by the engine, to be written by storage."""

    grant_id: str
    kind: EntryKind
    amount: int
    """Signed change to the grant's balance."""
    balance_after: int
    effective_at: datetime


def settle(grant: Grant, now: datetime) -> tuple[Grant, list[PendingEntry]]:
    """Bring `grant` up to `now`: every reset whose boundary passed, then expiry.

    Returns the grant as it stands at `now` and the entries that record each change, in
    timeline order. Resets that change nothing write nothing; once the balance reaches
    the fixed point of the rollover rule, the remaining boundaries are skipped at once.
    """
    if grant.status is not GrantStatus.ACTIVE:
        return grant, []
    entries: list[PendingEntry] = []
    current = grant
    if current.reset is not None:
        current, entries = _apply_resets(current, now)
    if current.expires_at is not None and current.expires_at <= now:
        if current.balance:
            entries.append(
                PendingEntry(current.id, EntryKind.EXPIRED, -current.balance, 0, current.expires_at)
            )
        current = replace(current, balance=0, status=GrantStatus.EXPIRED)
    return current, entries


def _apply_resets(grant: Grant, now: datetime) -> tuple[Grant, list[PendingEntry]]:
    rule = grant.reset
    assert rule is not None
    last_index = period_index(rule.anchor, rule.interval, now)
    if grant.expires_at is not None:
        # A boundary at or after expiry never happens: the grant is gone by then.
        at_expiry = period_index(rule.anchor, rule.interval, grant.expires_at)
        if period_start(rule.anchor, rule.interval, at_expiry) == grant.expires_at:
            at_expiry -= 1
        last_index = min(last_index, at_expiry)
    index = period_index(rule.anchor, rule.interval, grant.period_start)
    balance = grant.balance
    entries: list[PendingEntry] = []
    while index < last_index:
        index += 1
        after = rule.rollover.balance_after_reset(grant.amount, balance)
        if after == balance:
            # Fixed point: every later reset gives the same balance.
            index = last_index
            break
        boundary = period_start(rule.anchor, rule.interval, index)
        entries.append(PendingEntry(grant.id, EntryKind.RESET, after - balance, after, boundary))
        balance = after
    new_start = period_start(rule.anchor, rule.interval, index)
    if new_start < grant.period_start:
        raise InvariantViolation(f"grant {grant.id} would move back in time")
    return replace(grant, balance=balance, period_start=new_start), entries
