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
from revenipe.engine.periods import Interval, next_boundary, period_index, period_start


class EntryKind(StrEnum):
    """The kinds of ledger entry. Every change to a balance is exactly one of these."""

    GRANTED = "granted"
    CONSUMED = "consumed"
    RESET = "reset"
    EXPIRED = "expired"
    REVERSED = "reversed"
    ADJUSTED = "adjusted"
    REVOKED = "revoked"
    """Taken back because the access source was refunded or disputed."""
    HELD = "held"
    """Set aside by a reservation (docs/concepts/reservations.md): out of the balance
    until the reservation is settled, released or expires."""
    RELEASED = "released"
    """A reservation's hold given back to the grant when it closed (all of it; a settle
    then consumes the actual amount with `consumed` entries)."""


class GrantStatus(StrEnum):
    """Whether a grant may pay. Only an active one does; an expired or revoked grant
    holds 0 (`revenipe verify` checks it)."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Rollover:
    """What carries over at a reset, on top of the refill.

    ``carried = min(max, max(leftover, min))`` and the balance after the reset is
    ``amount + carried``. The defaults (0, 0) mean "refill to the granted amount".
    See docs/concepts/time.md#rollover and docs/adr/0003-time-and-rollover.md.
    """

    min: int = 0
    max: int = 0

    def balance_after_reset(self, amount: int, leftover: int) -> int:
        """The balance a reset leaves, in units: the refill `amount` plus what carries
        over of the `leftover` balance (see the class)."""
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
        return next_boundary(self.reset.anchor, self.reset.interval, self.period_start)


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
        current, entries = _apply_resets(current, current.reset, now)
    if current.expires_at is not None and current.expires_at <= now:
        if current.balance:
            entries.append(
                PendingEntry(current.id, EntryKind.EXPIRED, -current.balance, 0, current.expires_at)
            )
        current = replace(current, balance=0, status=GrantStatus.EXPIRED)
    return current, entries


def _apply_resets(grant: Grant, rule: ResetRule, now: datetime) -> tuple[Grant, list[PendingEntry]]:
    if now < next_boundary(rule.anchor, rule.interval, grant.period_start):
        # No boundary since the period began: what almost every track finds (the grant's
        # period start stays the same for a whole period, so this is a cache hit).
        return grant, []
    last_index = period_index(rule.anchor, rule.interval, now)
    if grant.expires_at is not None:
        # A boundary at or after expiry never happens: the grant is gone by then.
        at_expiry = period_index(rule.anchor, rule.interval, grant.expires_at)
        if period_start(rule.anchor, rule.interval, at_expiry) == grant.expires_at:
            at_expiry -= 1
        last_index = min(last_index, at_expiry)
    first_index = index = period_index(rule.anchor, rule.interval, grant.period_start)
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
    if index == first_index:
        # No boundary passed. The period may have begun off the grid (a grant made in a
        # trial, whose first boundary is the anchor at the trial's end): keep its start.
        return grant, entries
    new_start = period_start(rule.anchor, rule.interval, index)
    if new_start < grant.period_start:
        raise InvariantViolation(f"grant {grant.id} would move back in time")
    return replace(grant, balance=balance, period_start=new_start), entries


def revoke(grant: Grant, now: datetime) -> tuple[Grant, list[PendingEntry]]:
    """Take back what is left of a grant at `now` (its source was refunded or disputed).

    The grant is settled to `now` first, so resets and expiry before `now` stay on record.
    A revoked grant is final: no later renewal brings it back.
    """
    settled, entries = settle(grant, now)
    if settled.status is GrantStatus.REVOKED:
        return settled, entries
    if settled.balance:
        entries.append(PendingEntry(grant.id, EntryKind.REVOKED, -settled.balance, 0, now))
    return replace(settled, balance=0, status=GrantStatus.REVOKED), entries


def extend(
    grant: Grant, expires_at: datetime | None, written_off: int
) -> tuple[Grant, list[PendingEntry]]:
    """Move a grant's expiry to `expires_at`, the new end of its source's access.

    A grant its source's end had already written off comes back (a renewal confirmed
    after the period it renews had ended): `written_off` is the leftover its expiry took.
    At a reset boundary it comes back as that reset would have left it (rollover of the
    leftover); elsewhere with the leftover itself. Either way one entry at the old expiry,
    so the balance is what it would have been had the expiry never happened.
    """
    if grant.status is GrantStatus.REVOKED:
        return grant, []
    if grant.status is GrantStatus.ACTIVE:
        return replace(grant, expires_at=expires_at), []
    ended_at = grant.expires_at
    if ended_at is None or (expires_at is not None and expires_at <= ended_at):
        return grant, []
    balance = written_off
    period_began = grant.period_start
    rule = grant.reset
    if rule is not None:
        index = period_index(rule.anchor, rule.interval, ended_at)
        if period_start(rule.anchor, rule.interval, index) == ended_at and (
            ended_at > grant.period_start
        ):
            balance = rule.rollover.balance_after_reset(grant.amount, written_off)
            period_began = ended_at
    entries = []
    if balance:
        kind = EntryKind.RESET if period_began == ended_at else EntryKind.ADJUSTED
        entries.append(PendingEntry(grant.id, kind, balance, balance, ended_at))
    revived = replace(
        grant,
        balance=balance,
        period_start=period_began,
        expires_at=expires_at,
        status=GrantStatus.ACTIVE,
    )
    return revived, entries
