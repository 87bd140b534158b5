"""The bookkeeping of a track and of a reversal: every change they make, decided in memory.

`decide_track` and `decide_reversal` are pure: given the grants as they stand, they
return the new grant states, the ledger entries to append and the fields of the record
that answers the call. Storage only writes what they return, so these two functions are
where a balance changes meaning, and they can be tested without a database.

The stages of the services around them: load the grants, settle them to `now`
(`engine.grants.settle`), decide here, persist the decision, answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from revenipe.engine.burn import decide_burn, order_grants
from revenipe.engine.errors import ErrorCode, InvariantViolation, RefusalCode, RevenipeError
from revenipe.engine.grants import EntryKind, Grant, GrantStatus, PendingEntry, settle

# --- track ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackDecision:
    """Everything a track changes, and the outcome its usage event records.

    A refusal changes nothing: `grants` and `entries` are empty. Settling the grants to
    `now` (resets, expiry) is not part of the decision: that happened before, and is
    written whatever the outcome.
    """

    tracked_id: str
    """The entitlement id or usage key id the track named."""
    access_source_id: str | None
    """The access source the track was restricted to, if any."""
    requested: int
    available: int
    """What the grants that may pay held in total before the track."""
    refusal: RefusalCode | None
    grants: tuple[Grant, ...] = ()
    """The new state of each grant debited, in burn order."""
    entries: tuple[PendingEntry, ...] = ()
    """One `consumed` entry per grant debited, in burn order."""

    @property
    def success(self) -> bool:
        """Whether the track consumed `requested` (else it consumed nothing)."""
        return self.refusal is None

    @property
    def consumed(self) -> int:
        """Units taken: `requested` on success, 0 on a refusal."""
        return -sum(e.amount for e in self.entries)

    @property
    def remaining(self) -> int:
        """The balance of what was tracked after the track (usable grants only)."""
        return self.available - self.consumed

    @property
    def error(self) -> str | None:
        """The refusal code as sent on the wire, None on success."""
        return None if self.refusal is None else self.refusal.value


def refuse_track(
    refusal: RefusalCode, value: int, *, tracked_id: str, access_source_id: str | None = None
) -> TrackDecision:
    """The decision for a track refused before any grant was read.

    For the refusals the catalog or the customer's sources decide (`unknown_entitlement`,
    `not_metered`, `unknown_access_source`): no grant may pay, so nothing is available.
    """
    _require_value(value)
    if refusal is RefusalCode.INSUFFICIENT_BALANCE:
        # Insufficient balance is a statement about grants: only decide_track may say it.
        raise InvariantViolation("insufficient_balance needs the grants: use decide_track")
    return TrackDecision(tracked_id, access_source_id, value, 0, refusal)


def decide_track(
    grants: Sequence[Grant],
    value: int,
    now: datetime,
    *,
    tracked_id: str,
    entitlement_order: Sequence[str],
    access_source_id: str | None = None,
    held_before: bool = False,
) -> TrackDecision:
    """Decide a track of `value` units paid by `grants`, all or nothing.

    `grants` are the grants that may pay (the tracked entitlement's or usage key's,
    restricted to the named source if any), in any order and already settled to `now`;
    `entitlement_order` is the usage key's declared order (or the one entitlement).
    `held_before` says whether the customer ever held a grant that could pay; it only
    matters when `grants` is empty, to tell `access_expired` from `no_access`.

    Refusals, in the order they are decided: no grant usable at `now` gives
    `access_expired` (some grant exists or existed) or `no_access`; usable grants that
    hold less than `value` in total give `insufficient_balance`. On success each grant
    touched, in burn order (`engine.burn`), pays what it can, writing one `consumed`
    entry dated `now`.
    """
    _require_value(value)
    _require_settled_shape(grants)
    if not any(g.is_usable(now) for g in grants):
        refusal = RefusalCode.ACCESS_EXPIRED if grants or held_before else RefusalCode.NO_ACCESS
        return TrackDecision(tracked_id, access_source_id, value, 0, refusal)
    burn = decide_burn(order_grants(grants, entitlement_order), value, now)
    if not burn.success:
        return TrackDecision(tracked_id, access_source_id, value, burn.available, burn.refusal)
    by_id = {g.id: g for g in grants}
    states: list[Grant] = []
    entries: list[PendingEntry] = []
    for draw in burn.draws:
        grant = by_id[draw.grant_id]
        after = grant.balance - draw.amount
        if draw.amount <= 0 or after < 0:
            raise InvariantViolation(
                f"grant {grant.id} asked to pay {draw.amount} from a balance of {grant.balance}"
            )
        entries.append(PendingEntry(grant.id, EntryKind.CONSUMED, -draw.amount, after, now))
        states.append(replace(grant, balance=after))
    if len(states) != len({g.id for g in states}):
        raise InvariantViolation(f"a grant was debited twice by one track: {burn.draws}")
    decision = TrackDecision(
        tracked_id, access_source_id, value, burn.available, None, tuple(states), tuple(entries)
    )
    if decision.consumed != value or decision.remaining < 0:
        raise InvariantViolation(
            f"track of {value} consumed {decision.consumed} with {burn.available} available"
        )
    return decision


def _require_value(value: int) -> None:
    # The services validate input (`amounts.require_amount`); a bad value here is a bug.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvariantViolation(f"a track's value must be a positive integer, got {value!r}")


def _require_settled_shape(grants: Sequence[Grant]) -> None:
    ids = [g.id for g in grants]
    if len(ids) != len(set(ids)):
        raise InvariantViolation(f"the same grant was offered twice: {sorted(ids)}")
    for grant in grants:
        if grant.balance < 0:
            raise InvariantViolation(f"grant {grant.id} holds {grant.balance}, below zero")


# --- reversal ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credit:
    """Units a reversal gives back to one grant that paid for the usage event."""

    grant_id: str
    units: int


@dataclass(frozen=True, slots=True)
class ReversalDecision:
    """Everything a reversal changes, and the fields of its reversal record.

    `amount` 0 means nothing was left to reverse: no record, no entry, no grant state.
    Entries are appended in the order `settlement`, `refunds`, `write_offs`; only the
    refunds belong to the reversal record.
    """

    usage_event_id: str
    amount: int
    """Units given back by this reversal."""
    consumed: int
    """What the usage event consumed."""
    total_reversed: int
    """What the usage event has had given back, this reversal included."""
    credits: tuple[Credit, ...] = ()
    """Per grant, in the order given back: the grant drawn last first."""
    grants: tuple[Grant, ...] = ()
    """The new state of each grant credited, in the order of `credits`."""
    settlement: tuple[PendingEntry, ...] = ()
    """Resets and expiries of the credited grants that fell due before `now`."""
    refunds: tuple[PendingEntry, ...] = ()
    """One `reversed` entry per grant credited."""
    write_offs: tuple[PendingEntry, ...] = ()
    """One `expired` entry per credited grant that has expired since it paid."""

    @property
    def left_to_reverse(self) -> int:
        """What a later reversal of the same usage event could still give back."""
        return self.consumed - self.total_reversed

    @property
    def entries(self) -> tuple[PendingEntry, ...]:
        """All the ledger entries of the decision, in the order they are appended."""
        return self.settlement + self.refunds + self.write_offs


def amount_to_reverse(
    usage_event_id: str, consumed: int, reversed_before: int, amount: int | None
) -> int:
    """How many units a reversal of `amount` (None: all that is left) gives back.

    Decided from the usage event's totals alone, so that a call with nothing left, or
    asking too much, is answered before the event's ledger entries are read. Raises
    `reversal_exceeds_consumed` when `amount` is more than is left; 0 means nothing is.
    """
    if not 0 <= reversed_before <= consumed:
        raise InvariantViolation(
            f"usage event {usage_event_id}: reversed {reversed_before} of {consumed} consumed"
        )
    # The services validate input (`amounts.require_amount`); a bad amount here is a bug.
    if amount is not None and (
        isinstance(amount, bool) or not isinstance(amount, int) or amount < 1
    ):
        raise InvariantViolation(f"a reversal's amount must be positive, got {amount!r}")
    reversible = consumed - reversed_before
    wanted = reversible if amount is None else amount
    if wanted > reversible:
        raise RevenipeError(
            ErrorCode.REVERSAL_EXCEEDS_CONSUMED,
            f"usage event {usage_event_id} has {reversible} unit(s) left to reverse, "
            f"{wanted} asked",
            field="amount",
        )
    return wanted


def decide_reversal(
    *,
    usage_event_id: str,
    consumed: int,
    reversed_before: int,
    consumption: Sequence[tuple[str, int]],
    reversed_per_grant: Mapping[str, int],
    grants: Mapping[str, Grant],
    amount: int | None,
    now: datetime,
) -> ReversalDecision:
    """Decide how `amount` units of a usage event go back to the grants that paid.

    `consumed` and `reversed_before` are the usage event's totals; `consumption` is its
    (grant id, units consumed) per grant in the order they were drawn; and
    `reversed_per_grant` what earlier reversals gave back to each. `grants` holds the
    current state of (at least) every grant that paid, not yet settled: only the grants
    credited are settled to `now`, so a reversal writes nothing about the others.
    `amount` None gives back all that is left, which may be 0: then nothing changes.

    Asking for more than is left raises `reversal_exceeds_consumed`. The grant drawn last
    is credited first, never beyond what it paid minus what it already got back. A grant
    that has reset since is credited on top of its new balance. A grant that has expired
    since receives the credit and writes it off at once (`reversed` then `expired`), so
    the ledger shows both and the expired grant holds 0. A revoked grant (its source
    refunded or disputed) likewise: `reversed` then `revoked`, and it holds 0.
    """
    _require_event_totals(
        usage_event_id, consumed, reversed_before, consumption, reversed_per_grant
    )
    wanted = amount_to_reverse(usage_event_id, consumed, reversed_before, amount)
    if wanted == 0:
        return ReversalDecision(usage_event_id, 0, consumed, reversed_before)
    credits = _plan_credits(usage_event_id, consumption, reversed_per_grant, wanted)
    states: list[Grant] = []
    settlement: list[PendingEntry] = []
    refunds: list[PendingEntry] = []
    write_offs: list[PendingEntry] = []
    for credit in credits:
        stored = grants.get(credit.grant_id)
        if stored is None:
            raise InvariantViolation(
                f"usage event {usage_event_id} was paid by grant {credit.grant_id}, not given"
            )
        grant, entries = settle(stored, now)
        settlement.extend(entries)
        balance = grant.balance + credit.units
        refunds.append(PendingEntry(grant.id, EntryKind.REVERSED, credit.units, balance, now))
        ended = _WRITE_OFF_KIND.get(grant.status)
        if ended is not None:
            # An ended grant must hold 0: the credit is on record, then written off.
            write_offs.append(PendingEntry(grant.id, ended, -credit.units, 0, now))
            balance = 0
        states.append(replace(grant, balance=balance))
    return ReversalDecision(
        usage_event_id,
        wanted,
        consumed,
        reversed_before + wanted,
        credits,
        tuple(states),
        tuple(settlement),
        tuple(refunds),
        tuple(write_offs),
    )


_WRITE_OFF_KIND = {GrantStatus.EXPIRED: EntryKind.EXPIRED, GrantStatus.REVOKED: EntryKind.REVOKED}
"""How a credit to a grant that can no longer pay is written off, by the grant's status."""


def _require_event_totals(
    usage_event_id: str,
    consumed: int,
    reversed_before: int,
    consumption: Sequence[tuple[str, int]],
    reversed_per_grant: Mapping[str, int],
) -> None:
    # The usage event's counters and its ledger entries are written in one transaction;
    # if they disagree, a reversal would refund units nobody paid.
    paid = dict(consumption)
    if len(paid) != len(consumption):
        raise InvariantViolation(f"usage event {usage_event_id}: a grant paid twice")
    if any(units <= 0 for units in paid.values()) or sum(paid.values()) != consumed:
        raise InvariantViolation(
            f"usage event {usage_event_id}: consumed {consumed} but its entries say {paid}"
        )
    for grant_id, given_back in reversed_per_grant.items():
        if not 0 <= given_back <= paid.get(grant_id, 0):
            raise InvariantViolation(
                f"usage event {usage_event_id}: grant {grant_id} got back {given_back} "
                f"of the {paid.get(grant_id, 0)} it paid"
            )
    if sum(reversed_per_grant.values()) != reversed_before:
        raise InvariantViolation(
            f"usage event {usage_event_id}: reversed {reversed_before} but its entries say "
            f"{dict(reversed_per_grant)}"
        )


def _plan_credits(
    usage_event_id: str,
    consumption: Sequence[tuple[str, int]],
    reversed_per_grant: Mapping[str, int],
    wanted: int,
) -> tuple[Credit, ...]:
    credits: list[Credit] = []
    left = wanted
    # Last drawn, first given back: a partial reversal then leaves exactly the draws a
    # track of the smaller value would have made.
    for grant_id, units in reversed(consumption):
        take = min(units - reversed_per_grant.get(grant_id, 0), left)
        if take > 0:
            credits.append(Credit(grant_id, take))
            left -= take
        if left == 0:
            break
    if left:
        raise InvariantViolation(
            f"usage event {usage_event_id}: its ledger holds {wanted - left} of {wanted} to give"
        )
    return tuple(credits)
