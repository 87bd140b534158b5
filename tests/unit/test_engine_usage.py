"""The bookkeeping of track and reversal (`engine.usage`), in memory: properties over any
grants, values and instants, and the worked examples of docs/concepts/."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from revenipe.engine.errors import ErrorCode, InvariantViolation, RefusalCode, RevenipeError
from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    ResetRule,
    Rollover,
    settle,
)
from revenipe.engine.periods import Interval
from revenipe.engine.usage import (
    Credit,
    ReversalDecision,
    TrackDecision,
    amount_to_reverse,
    decide_reversal,
    decide_track,
    refuse_track,
)

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
ENTITLEMENTS = ("a", "b", "c")
PROPERTY = settings(max_examples=300, deadline=None)


# --- strategies --------------------------------------------------------------------------


@st.composite
def stored_grants(draw: st.DrawFn, *, min_size: int = 0) -> list[Grant]:
    """Grants as storage may hold them at NOW: not yet settled, some about to reset or
    expire, some already expired or revoked."""
    count = draw(st.integers(min_size, 6))
    grants = []
    for i in range(count):
        created_at = NOW - timedelta(days=draw(st.integers(0, 120)), hours=draw(st.integers(0, 23)))
        amount = draw(st.integers(0, 60))
        reset = None
        if draw(st.booleans()):
            rollover = Rollover(*sorted(draw(st.lists(st.integers(0, 30), min_size=2, max_size=2))))
            reset = ResetRule(draw(st.sampled_from(list(Interval))), created_at, rollover)
        expires_at = None
        if draw(st.booleans()):
            expires_at = created_at + timedelta(days=draw(st.integers(1, 200)))
        status = draw(st.sampled_from([GrantStatus.ACTIVE] * 6 + [GrantStatus.REVOKED]))
        balance = 0 if status is not GrantStatus.ACTIVE else draw(st.integers(0, amount + 20))
        grants.append(
            Grant(
                id=f"g{i}",
                entitlement_id=draw(st.sampled_from(ENTITLEMENTS)),
                source_id=f"s{draw(st.integers(0, 2))}",
                amount=amount,
                balance=balance,
                priority=draw(st.integers(-1, 1)),
                created_at=created_at,
                period_start=created_at,
                expires_at=expires_at,
                reset=reset,
                status=status,
            )
        )
    return grants


@st.composite
def settled_grants(draw: st.DrawFn, *, min_size: int = 0) -> list[Grant]:
    """Grants as a track receives them: settled to NOW."""
    return [settle(g, NOW)[0] for g in draw(stored_grants(min_size=min_size))]


ORDERS = st.permutations(ENTITLEMENTS)
VALUES = st.integers(1, 250)


def track(
    grants: Sequence[Grant],
    value: int,
    order: Sequence[str] = ENTITLEMENTS,
    held_before: bool = False,
    now: datetime = NOW,
) -> TrackDecision:
    return decide_track(
        grants,
        value,
        now,
        tracked_id="credits",
        entitlement_order=order,
        held_before=held_before,
    )


def usable_total(grants: Sequence[Grant], now: datetime = NOW) -> int:
    return sum(g.balance for g in grants if g.is_usable(now))


def model_burn_order(grants: Sequence[Grant], order: Sequence[str]) -> list[Grant]:
    """The documented order, written out again: key order, priority, soonest expiry
    (never last), oldest, id."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(
        grants,
        key=lambda g: (
            order.index(g.entitlement_id),
            g.priority,
            g.expires_at is None,
            g.expires_at or far,
            g.created_at,
            g.id,
        ),
    )


def apply(grants: Sequence[Grant], states: Sequence[Grant]) -> list[Grant]:
    new = {g.id: g for g in states}
    return [new.get(g.id, g) for g in grants]


# --- track: properties -------------------------------------------------------------------


@PROPERTY
@given(settled_grants(), VALUES, ORDERS, st.booleans())
def test_success_iff_the_usable_grants_hold_the_value(
    grants: list[Grant], value: int, order: Sequence[str], held_before: bool
) -> None:
    decision = track(grants, value, order, held_before)
    available = usable_total(grants)
    assert decision.available == available
    assert decision.success == (available >= value and any(g.is_usable(NOW) for g in grants))
    if decision.success:
        assert decision.error is None
    elif not any(g.is_usable(NOW) for g in grants):
        expected = RefusalCode.ACCESS_EXPIRED if grants or held_before else RefusalCode.NO_ACCESS
        assert decision.refusal is expected
    else:
        assert decision.refusal is RefusalCode.INSUFFICIENT_BALANCE
    assert decision.error == (decision.refusal.value if decision.refusal else None)


@PROPERTY
@given(settled_grants(), st.data(), ORDERS)
def test_a_success_takes_exactly_the_value_and_nothing_goes_below_zero(
    grants: list[Grant], data: st.DataObject, order: Sequence[str]
) -> None:
    # The value is drawn within what the grants hold, so that (nearly) every example is
    # a success: filtering refusals out made hypothesis give up on slow machines.
    assume(usable_total(grants) > 0)
    value = data.draw(st.integers(1, usable_total(grants)), label="value")
    decision = track(grants, value, order)
    assert decision.success
    assert sum(e.amount for e in decision.entries) == -value
    assert decision.consumed == value
    assert decision.remaining == usable_total(grants) - value
    assert usable_total(apply(grants, decision.grants)) == decision.remaining
    before = {g.id: g for g in grants}
    assert len(decision.entries) == len(decision.grants)
    for entry, state in zip(decision.entries, decision.grants, strict=True):
        assert entry.kind is EntryKind.CONSUMED
        assert entry.effective_at == NOW
        assert entry.amount < 0
        assert entry.grant_id == state.id
        assert entry.balance_after == state.balance >= 0
        assert before[state.id].balance + entry.amount == state.balance
        # Only the balance moves: period, status, expiry stay as settled.
        assert replace(state, balance=before[state.id].balance) == before[state.id]


@PROPERTY
@given(settled_grants(), st.data(), ORDERS)
def test_entries_follow_the_burn_order(
    grants: list[Grant], data: st.DataObject, order: Sequence[str]
) -> None:
    assume(usable_total(grants) > 0)
    value = data.draw(st.integers(1, usable_total(grants)), label="value")
    decision = track(grants, value, order)
    assert decision.success
    payers = [g for g in model_burn_order(grants, order) if g.is_usable(NOW) and g.balance]
    touched = [e.grant_id for e in decision.entries]
    # The first grants in burn order pay, each one emptied before the next is drawn.
    assert touched == [g.id for g in payers[: len(touched)]]
    assert all(e.balance_after == 0 for e in decision.entries[:-1])
    assert len(set(touched)) == len(touched)


@PROPERTY
@given(settled_grants(), VALUES, ORDERS, st.booleans())
def test_a_refusal_changes_nothing(
    grants: list[Grant], value: int, order: Sequence[str], held_before: bool
) -> None:
    decision = track(grants, value, order, held_before)
    assume(not decision.success)
    assert decision.grants == () and decision.entries == ()
    assert decision.consumed == 0
    assert decision.remaining == decision.available == usable_total(grants)


@PROPERTY
@given(settled_grants(), VALUES, ORDERS, st.randoms(use_true_random=False))
def test_the_decision_depends_on_the_grants_not_on_their_order(
    grants: list[Grant], value: int, order: Sequence[str], rnd: random.Random
) -> None:
    first = track(grants, value, order)
    shuffled = list(grants)
    rnd.shuffle(shuffled)
    assert track(shuffled, value, order) == first
    assert track(grants, value, order) == first


@PROPERTY
@given(settled_grants(min_size=1), st.lists(VALUES, min_size=1, max_size=8), ORDERS)
def test_a_run_of_tracks_conserves_units(
    grants: list[Grant], values: list[int], order: Sequence[str]
) -> None:
    start = usable_total(grants)
    consumed = 0
    current = grants
    for value in values:
        decision = track(current, value, order)
        assert decision.remaining == start - consumed - decision.consumed
        current = apply(current, decision.grants)
        consumed += decision.consumed
    assert usable_total(current) == start - consumed
    assert all(g.balance >= 0 for g in current)


def test_the_record_names_what_was_tracked() -> None:
    grant = settle(_grant("g1", 10), NOW)[0]
    decision = decide_track(
        [grant],
        4,
        NOW,
        tracked_id="monthly_credits",
        entitlement_order=["a"],
        access_source_id="src_1",
    )
    assert (decision.tracked_id, decision.access_source_id) == ("monthly_credits", "src_1")
    assert (decision.requested, decision.consumed, decision.remaining) == (4, 4, 6)


@pytest.mark.parametrize(
    "refusal",
    [RefusalCode.UNKNOWN_ENTITLEMENT, RefusalCode.NOT_METERED, RefusalCode.UNKNOWN_ACCESS_SOURCE],
)
def test_refusals_decided_before_any_grant(refusal: RefusalCode) -> None:
    decision = refuse_track(refusal, 7, tracked_id="x", access_source_id="src")
    assert not decision.success and decision.error == refusal.value
    assert (decision.requested, decision.consumed, decision.remaining) == (7, 0, 0)
    assert decision.grants == () and decision.entries == ()
    with pytest.raises(InvariantViolation):
        refuse_track(RefusalCode.INSUFFICIENT_BALANCE, 7, tracked_id="x")


@pytest.mark.parametrize("value", [0, -1, True])
def test_a_value_that_is_not_a_positive_integer_is_a_bug(value: int) -> None:
    with pytest.raises(InvariantViolation):
        track([_grant("g1", 10)], value)


def test_a_negative_or_duplicated_grant_is_a_bug() -> None:
    with pytest.raises(InvariantViolation):
        track([replace(_grant("g1", 10), balance=-1)], 1)
    with pytest.raises(InvariantViolation):
        track([_grant("g1", 10), _grant("g1", 5)], 1)


def test_the_usage_key_example_of_the_docs() -> None:
    # docs/concepts/track.md: 100 monthly then 500 purchased, track 130.
    monthly = _grant("monthly", 100, entitlement="a")
    pack = _grant("pack", 500, entitlement="b")
    decision = track([pack, monthly], 130, ["a", "b"])
    assert [(e.grant_id, e.amount, e.balance_after) for e in decision.entries] == [
        ("monthly", -100, 0),
        ("pack", -30, 470),
    ]
    assert (decision.consumed, decision.remaining) == (130, 470)


# --- reversal: helpers -------------------------------------------------------------------


class Event:
    """A successful track, and what its reversals gave back so far."""

    def __init__(self, decision: TrackDecision) -> None:
        assert decision.success
        self.id = "use_1"
        self.consumed = decision.consumed
        self.consumption = [(e.grant_id, -e.amount) for e in decision.entries]
        self.reversed = 0
        self.per_grant: dict[str, int] = defaultdict(int)

    def reverse(
        self, grants: Sequence[Grant], amount: int | None, now: datetime = NOW
    ) -> ReversalDecision:
        decision = decide_reversal(
            usage_event_id=self.id,
            consumed=self.consumed,
            reversed_before=self.reversed,
            consumption=self.consumption,
            reversed_per_grant=dict(self.per_grant),
            grants={g.id: g for g in grants},
            amount=amount,
            now=now,
        )
        for credit in decision.credits:
            self.per_grant[credit.grant_id] += credit.units
        self.reversed = decision.total_reversed
        return decision


@dataclass(frozen=True)
class Tracked:
    """Grants settled to NOW, the key order, a successful track on them, and the grants
    after it."""

    before: list[Grant]
    order: Sequence[str]
    decision: TrackDecision
    after: list[Grant]


@st.composite
def tracked(draw: st.DrawFn) -> Tracked:
    grants = draw(settled_grants(min_size=1))
    available = usable_total(grants)
    assume(available >= 1)
    value = draw(st.integers(1, available))
    order = tuple(draw(ORDERS))
    decision = track(grants, value, order)
    return Tracked(grants, order, decision, apply(grants, decision.grants))


def amounts_to_reverse(consumed: int) -> st.SearchStrategy[list[int | None]]:
    return st.lists(st.one_of(st.none(), st.integers(1, consumed + 3)), min_size=1, max_size=5)


# --- reversal: properties ----------------------------------------------------------------


@PROPERTY
@given(tracked(), st.data())
def test_a_reversal_never_gives_back_more_than_is_left(case: Tracked, data: st.DataObject) -> None:
    decision, grants = case.decision, case.after
    event = Event(decision)
    paid = dict(event.consumption)
    for amount in data.draw(amounts_to_reverse(event.consumed)):
        left = event.consumed - event.reversed
        before = dict(event.per_grant)
        if amount is not None and amount > left:
            with pytest.raises(RevenipeError) as raised:
                event.reverse(grants, amount)
            assert raised.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
            assert event.reversed == event.consumed - left and event.per_grant == before
            continue
        reversal = event.reverse(grants, amount)
        grants = apply(grants, reversal.grants)
        assert reversal.amount == (left if amount is None else amount)
        assert sum(c.units for c in reversal.credits) == reversal.amount
        assert all(c.units > 0 for c in reversal.credits)
        assert reversal.total_reversed == event.consumed - left + reversal.amount
        assert reversal.left_to_reverse == left - reversal.amount >= 0
        for grant_id, given_back in event.per_grant.items():
            assert given_back <= paid[grant_id]
        if reversal.amount == 0:
            assert reversal == ReversalDecision(event.id, 0, event.consumed, event.consumed)


@PROPERTY
@given(tracked(), st.data())
def test_last_drawn_is_given_back_first(case: Tracked, data: st.DataObject) -> None:
    decision, grants = case.decision, case.after
    event = Event(decision)
    for amount in data.draw(amounts_to_reverse(event.consumed)):
        if amount is not None and amount > event.consumed - event.reversed:
            continue
        open_before = {g: units - event.per_grant[g] for g, units in event.consumption}
        reversal = event.reverse(grants, amount)
        grants = apply(grants, reversal.grants)
        expected = []
        left = reversal.amount
        for grant_id, _ in reversed(event.consumption):
            take = min(open_before[grant_id], left)
            if take:
                expected.append(Credit(grant_id, take))
                left -= take
        assert list(reversal.credits) == expected


@PROPERTY
@given(tracked(), st.data())
def test_track_then_reversal_conserves_units(case: Tracked, data: st.DataObject) -> None:
    original, decision, grants = case.before, case.decision, case.after
    event = Event(decision)
    k = data.draw(st.integers(1, event.consumed))
    reversal = event.reverse(grants, k)
    after = apply(grants, reversal.grants)
    assert usable_total(after) == usable_total(original) - event.consumed + k
    # A partial reversal leaves what a track of the smaller value would have left.
    if k < event.consumed:
        smaller = track(original, event.consumed - k, case.order)
        assert after == apply(original, smaller.grants)
    else:
        assert after == original
    # And giving everything back makes the same track decide the same way again.
    rest = event.reverse(after, None)
    restored = apply(after, rest.grants)
    assert restored == original
    assert track(restored, event.consumed, case.order) == decision


@PROPERTY
@given(
    stored_grants(min_size=1),
    st.data(),
    st.integers(0, 400).map(lambda days: timedelta(days=days)),
    st.integers(0, 86_399).map(lambda s: timedelta(seconds=s)),
)
def test_a_reversal_later_settles_then_credits_and_writes_off_what_expired(
    stored: list[Grant], data: st.DataObject, days: timedelta, seconds: timedelta
) -> None:
    settled = [settle(g, NOW)[0] for g in stored]
    available = usable_total(settled)
    assume(available >= 1)
    decision = track(settled, data.draw(st.integers(1, available)), ENTITLEMENTS)
    grants = apply(settled, decision.grants)
    event = Event(decision)
    later = NOW + days + seconds
    amount = data.draw(st.one_of(st.none(), st.integers(1, event.consumed)))
    reversal = event.reverse(grants, amount, later)
    by_id = {g.id: g for g in grants}
    credited = {c.grant_id: c.units for c in reversal.credits}
    assert [g.id for g in reversal.grants] == list(credited)
    assert {e.grant_id for e in reversal.entries} <= set(credited)
    for state in reversal.grants:
        stored_state = by_id[state.id]
        expected, _ = settle(stored_state, later)
        entries = [e for e in reversal.entries if e.grant_id == state.id]
        # The ledger explains the new balance: stored balance plus every entry, in order.
        running = stored_state.balance
        for entry in entries:
            running += entry.amount
            assert entry.balance_after == running >= 0
        assert running == state.balance
        assert [e.kind for e in reversal.refunds if e.grant_id == state.id] == [EntryKind.REVERSED]
        assert state.status is expected.status
        if expected.status is GrantStatus.EXPIRED:
            assert state.balance == 0
            assert [(e.kind, e.amount) for e in reversal.write_offs if e.grant_id == state.id] == [
                (EntryKind.EXPIRED, -credited[state.id])
            ]
        else:
            # A reset since: the credit lands on top of the new period's balance.
            assert state.balance == expected.balance + credited[state.id]
            assert state.period_start == expected.period_start
            assert not [e for e in reversal.write_offs if e.grant_id == state.id]
    assert all(e.effective_at == later for e in reversal.refunds + reversal.write_offs)
    assert all(e.effective_at <= later for e in reversal.settlement)


@PROPERTY
@given(tracked(), st.data())
def test_reversal_decisions_are_deterministic(case: Tracked, data: st.DataObject) -> None:
    decision, grants = case.decision, case.after
    amount = data.draw(st.one_of(st.none(), st.integers(1, decision.consumed)))
    first = Event(decision).reverse(grants, amount)
    assert Event(decision).reverse(list(reversed(grants)), amount) == first


@PROPERTY
@given(st.integers(0, 300), st.data())
def test_the_amount_is_decided_from_the_event_totals_alone(
    consumed: int, data: st.DataObject
) -> None:
    reversed_before = data.draw(st.integers(0, consumed))
    amount = data.draw(st.one_of(st.none(), st.integers(1, consumed + 5)))
    left = consumed - reversed_before
    if amount is not None and amount > left:
        with pytest.raises(RevenipeError) as raised:
            amount_to_reverse("use_1", consumed, reversed_before, amount)
        assert raised.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
    else:
        assert amount_to_reverse("use_1", consumed, reversed_before, amount) == (
            left if amount is None else amount
        )


@pytest.mark.parametrize("amount", [0, -3, True])
def test_a_reversal_amount_that_is_not_positive_is_a_bug(amount: int) -> None:
    with pytest.raises(InvariantViolation):
        amount_to_reverse("use_1", 10, 0, amount)


# --- reversal: examples and broken invariants -------------------------------------------


def test_the_partial_reversal_example_of_the_docs() -> None:
    # docs/concepts/reversal.md: 100 monthly then 10 bonus, track 104, reverse 6 then all.
    monthly = _grant("monthly", 100, entitlement="a")
    bonus = _grant("bonus", 10, entitlement="b")
    decision = track([monthly, bonus], 104, ["a", "b"])
    grants = apply([monthly, bonus], decision.grants)
    event = Event(decision)
    partial = event.reverse(grants, 6)
    assert partial.credits == (Credit("bonus", 4), Credit("monthly", 2))
    assert [(e.grant_id, e.kind, e.amount, e.balance_after) for e in partial.entries] == [
        ("bonus", EntryKind.REVERSED, 4, 10),
        ("monthly", EntryKind.REVERSED, 2, 2),
    ]
    grants = apply(grants, partial.grants)
    with pytest.raises(RevenipeError) as raised:
        event.reverse(grants, 99)
    assert raised.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
    assert "98 unit(s) left" in raised.value.message and raised.value.field == "amount"
    rest = event.reverse(grants, None)
    assert (rest.amount, rest.total_reversed, rest.credits) == (98, 104, (Credit("monthly", 98),))
    again = event.reverse(apply(grants, rest.grants), None)
    assert (again.amount, again.credits, again.entries) == (0, (), ())


def test_an_expired_pack_takes_the_credit_and_writes_it_off() -> None:
    # docs/concepts/reversal.md: a pack of 50 paid 20, then expired.
    pack = _grant("pack", 50, expires_at=NOW + timedelta(days=1))
    decision = track([pack], 20)
    event = Event(decision)
    later = NOW + timedelta(days=2)
    reversal = event.reverse(apply([pack], decision.grants), None, later)
    assert [(e.kind, e.amount, e.balance_after, e.effective_at) for e in reversal.entries] == [
        (EntryKind.EXPIRED, -30, 0, NOW + timedelta(days=1)),
        (EntryKind.REVERSED, 20, 20, later),
        (EntryKind.EXPIRED, -20, 0, later),
    ]
    assert reversal.grants[0].balance == 0
    assert reversal.grants[0].status is GrantStatus.EXPIRED


def test_a_reset_since_lands_the_credit_on_top() -> None:
    # docs/concepts/reversal.md: 100 monthly all used, refilled at the reset, reversed.
    start = datetime(2026, 1, 31, tzinfo=UTC)
    monthly = replace(
        _grant("monthly", 100, created_at=start),
        reset=ResetRule(Interval.MONTH, start),
    )
    at = datetime(2026, 1, 31, 12, tzinfo=UTC)
    decision = track([monthly], 100, now=at)
    event = Event(decision)
    reversal = event.reverse(
        apply([monthly], decision.grants), None, datetime(2026, 3, 3, tzinfo=UTC)
    )
    assert [(e.kind, e.amount, e.balance_after) for e in reversal.entries] == [
        (EntryKind.RESET, 100, 100),
        (EntryKind.REVERSED, 100, 200),
    ]
    assert reversal.grants[0].balance == 200


def test_a_revoked_grant_receives_the_credit_and_writes_it_off() -> None:
    # A refunded or disputed source's grant can never pay again: like an expired one it
    # holds 0, the credit on record and written off (it once kept the units, and
    # `revenipe verify` reported "revoked but holds 4").
    grant = _grant("g", 10)
    decision = track([grant], 4)
    revoked = replace(apply([grant], decision.grants)[0], balance=0, status=GrantStatus.REVOKED)
    reversal = Event(decision).reverse([revoked], None)
    assert [(e.kind, e.amount, e.balance_after) for e in reversal.entries] == [
        (EntryKind.REVERSED, 4, 4),
        (EntryKind.REVOKED, -4, 0),
    ]
    assert reversal.grants[0].status is GrantStatus.REVOKED
    assert reversal.grants[0].balance == 0


@pytest.mark.parametrize(
    ("consumed", "reversed_before", "consumption", "per_grant"),
    [
        (5, 0, [("g", 4)], {}),  # the entries consumed less than the event says
        (5, 6, [("g", 5)], {"g": 6}),  # reversed more than consumed
        (5, 2, [("g", 5)], {"g": 1}),  # counters and entries disagree on reversals
        (5, 0, [("g", 2), ("g", 3)], {}),  # one grant paid twice
        (5, 1, [("g", 5)], {"h": 1}),  # given back to a grant that did not pay
    ],
)
def test_a_usage_event_whose_ledger_disagrees_is_a_bug(
    consumed: int,
    reversed_before: int,
    consumption: list[tuple[str, int]],
    per_grant: dict[str, int],
) -> None:
    with pytest.raises(InvariantViolation):
        decide_reversal(
            usage_event_id="use_1",
            consumed=consumed,
            reversed_before=reversed_before,
            consumption=consumption,
            reversed_per_grant=per_grant,
            grants={"g": _grant("g", 0)},
            amount=None,
            now=NOW,
        )


def test_a_grant_that_paid_but_is_not_given_is_a_bug() -> None:
    with pytest.raises(InvariantViolation):
        decide_reversal(
            usage_event_id="use_1",
            consumed=3,
            reversed_before=0,
            consumption=[("g", 3)],
            reversed_per_grant={},
            grants={},
            amount=None,
            now=NOW,
        )


def _grant(
    gid: str,
    balance: int,
    *,
    entitlement: str = "a",
    expires_at: datetime | None = None,
    created_at: datetime = NOW - timedelta(days=1),
) -> Grant:
    return Grant(
        id=gid,
        entitlement_id=entitlement,
        source_id="s",
        amount=balance,
        balance=balance,
        priority=0,
        created_at=created_at,
        period_start=created_at,
        expires_at=expires_at,
    )
