"""The bookkeeping of reservations (`engine.reservations`), in memory: a hold then a
close is a track, never more and never less; the worked examples of
docs/concepts/reservations.md (a grant that resets, expires or is revoked while held)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_usage import ENTITLEMENTS, NOW, ORDERS, VALUES, apply, settled_grants, track

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    PendingEntry,
    ResetRule,
    Rollover,
    revoke,
)
from revenipe.engine.periods import Interval
from revenipe.engine.reservations import (
    DEFAULT_TTL_SECONDS,
    CloseDecision,
    HeldPart,
    HoldDecision,
    decide_close,
    decide_hold,
    require_ttl,
)

PROPERTY = settings(max_examples=300, deadline=None)


def hold(grants: Sequence[Grant], value: int, order: Sequence[str] = ENTITLEMENTS) -> HoldDecision:
    return decide_hold(grants, value, NOW, tracked_id="credits", entitlement_order=order)


def parts_of(decision: HoldDecision, at: datetime = NOW) -> list[HeldPart]:
    return [HeldPart(e.grant_id, -e.amount, at) for e in decision.entries]


def close(
    grants: Sequence[Grant],
    parts: Sequence[HeldPart],
    value: int,
    *,
    at: datetime = NOW,
    now: datetime = NOW,
    order: Sequence[str] = ENTITLEMENTS,
) -> CloseDecision:
    """Close over `grants` as stored, every active one a candidate."""
    return decide_close(
        parts,
        {g.id: g for g in grants},
        value,
        at,
        now,
        candidates=[g.id for g in grants if g.status is GrantStatus.ACTIVE],
        entitlement_order=order,
    )


def assert_running_balances(grants: Sequence[Grant], decision: CloseDecision) -> None:
    """Each entry's balance_after is its grant's running sum; the states end there."""
    running = {g.id: g.balance for g in grants}
    for entry in decision.entries:
        running[entry.grant_id] += entry.amount
        assert entry.balance_after == running[entry.grant_id] >= 0, entry
    for state in decision.grants:
        assert state.balance == running[state.id]


def balances(grants: Sequence[Grant]) -> dict[str, int]:
    return {g.id: g.balance for g in grants}


# --- properties ----------------------------------------------------------------------


@PROPERTY
@given(settled_grants(), VALUES, ORDERS)
def test_a_hold_draws_exactly_what_a_track_would_consume(
    grants: list[Grant], value: int, order: Sequence[str]
) -> None:
    held, tracked = hold(grants, value, order), track(grants, value, order)
    assert held.refusal == tracked.refusal
    assert held.grants == tracked.grants
    assert [(e.grant_id, e.amount) for e in held.entries] == [
        (e.grant_id, e.amount) for e in tracked.entries
    ]
    assert all(e.kind is EntryKind.HELD for e in held.entries)
    assert held.remaining == tracked.remaining
    assert held.held == (value if held.success else 0)


@PROPERTY
@given(settled_grants(min_size=1), st.data(), ORDERS)
def test_hold_then_settle_is_the_track_of_the_settled_value(
    grants: list[Grant], data: st.DataObject, order: Sequence[str]
) -> None:
    total = sum(g.balance for g in grants if g.is_usable(NOW))
    value = data.draw(st.integers(1, max(1, total)))
    held = hold(grants, value, order)
    if not held.success:
        return
    after_hold = apply(grants, held.grants)
    settle_value = data.draw(st.integers(0, value + 40))
    decision = close(after_hold, parts_of(held), settle_value, order=order)
    assert_running_balances(after_hold, decision)
    final = apply(after_hold, decision.grants)
    if settle_value == 0:
        assert balances(final) == balances(grants)
        assert (decision.consumed, decision.released, decision.shortfall) == (0, value, 0)
        return
    tracked = track(grants, settle_value, order)
    if tracked.success:
        # Never more and never less than the track of what was settled.
        assert decision.shortfall == 0 and decision.consumed == settle_value
        tracked_final = balances(apply(grants, tracked.grants))
        assert sum(balances(final).values()) == sum(tracked_final.values())
        if settle_value <= value:
            assert balances(final) == balances(apply(grants, tracked.grants))
    else:
        assert decision.consumed == value
        assert decision.shortfall == settle_value - value
        assert balances(final) == balances(apply(grants, track(grants, value, order).grants))
    assert decision.released == value - min(value, settle_value)
    assert decision.remaining == sum(g.balance for g in final if g.is_usable(NOW))


@PROPERTY
@given(settled_grants(min_size=1), st.data(), st.integers(0, 120))
def test_units_held_across_any_time_are_never_created(
    grants: list[Grant], data: st.DataObject, days_later: int
) -> None:
    """Whatever happens to the held grants meanwhile (resets, expiry), a release never
    leaves more than the grants would hold had the hold been consumed and nothing
    else: at most the held units come back, never into a period that ended."""
    total = sum(g.balance for g in grants if g.is_usable(NOW))
    value = data.draw(st.integers(1, max(1, total)))
    held = hold(grants, value)
    if not held.success:
        return
    after_hold = apply(grants, held.grants)
    later = NOW + timedelta(days=days_later)
    released = close(after_hold, parts_of(held), 0, now=later)
    assert_running_balances(after_hold, released)
    never_held = close(grants, [], 0, now=later)
    consumed_instead = close(apply(grants, track(grants, value).grants), [], 0, now=later)
    final = balances(apply(after_hold, released.grants))
    assert sum(final.values()) <= sum(balances(apply(grants, never_held.grants)).values())
    assert sum(final.values()) >= sum(balances(apply(grants, consumed_instead.grants)).values())
    for state in released.grants:
        if state.status is not GrantStatus.ACTIVE:
            assert state.balance == 0


# --- worked examples (docs/concepts/reservations.md) ------------------------------------

MONTH_START = datetime(2026, 3, 1, tzinfo=UTC)


NO_ROLLOVER = Rollover()


def monthly(balance: int, rollover: Rollover = NO_ROLLOVER) -> Grant:
    return Grant(
        id="monthly",
        entitlement_id="a",
        source_id="s",
        amount=100,
        balance=balance,
        priority=0,
        created_at=MONTH_START,
        period_start=MONTH_START,
        reset=ResetRule(Interval.MONTH, MONTH_START, rollover),
    )


def pack(balance: int, expires_at: datetime | None = None) -> Grant:
    return Grant(
        id="pack",
        entitlement_id="b",
        source_id="p",
        amount=500,
        balance=balance,
        priority=0,
        created_at=MONTH_START,
        period_start=MONTH_START,
        expires_at=expires_at,
    )


def test_settling_more_than_held_draws_the_difference_in_burn_order() -> None:
    grants = [monthly(100), pack(50)]
    held = hold(grants, 80)
    decision = close(apply(grants, held.grants), parts_of(held), 120)
    assert (decision.consumed, decision.released, decision.shortfall) == (120, 0, 0)
    assert balances(apply(grants, decision.grants)) == {"monthly": 0, "pack": 30}
    assert decision.remaining == 30


def test_settling_more_than_can_be_paid_settles_the_hold_and_says_the_shortfall() -> None:
    grants = [monthly(100), pack(50)]
    held = hold(grants, 140)
    decision = close(apply(grants, held.grants), parts_of(held), 200)
    assert (decision.consumed, decision.released, decision.shortfall) == (140, 0, 60)
    assert balances(apply(grants, decision.grants)) == {"monthly": 0, "pack": 10}


def test_a_grant_that_resets_while_held_gets_nothing_back_into_the_new_period() -> None:
    grants = [monthly(100)]
    held = hold(grants, 75)
    after_hold = apply(grants, held.grants)  # 25 left in March
    april = datetime(2026, 4, 2, tzinfo=UTC)
    decision = close(after_hold, parts_of(held), 30, now=april, at=april)
    # March's 25 were reset away (refill to 100); of March's 75 held, 30 are consumed
    # and 45 go back to March, which has ended: written off by a reset entry.
    kinds = [(e.kind, e.amount, e.balance_after) for e in decision.entries]
    assert kinds == [
        (EntryKind.RESET, 75, 100),
        (EntryKind.RELEASED, 75, 175),
        (EntryKind.CONSUMED, -30, 145),
        (EntryKind.RESET, -45, 100),
    ]
    assert decision.remaining == 100 and decision.consumed == 30 and decision.released == 45


def test_an_expiry_found_late_releases_before_the_resets_that_followed_it() -> None:
    """Released at the hold's expiry (March), so the April reset sees the units: with a
    rollover they carry over exactly as if they had never been held."""
    grants = [monthly(100, Rollover(0, 50))]
    held = hold(grants, 75)
    expired_at = NOW + timedelta(minutes=10)
    april = datetime(2026, 4, 2, tzinfo=UTC)
    decision = close(apply(grants, held.grants), parts_of(held), 0, at=expired_at, now=april)
    # 100 at the reset: 100 + min(50, 100) = 150, as without the hold.
    assert balances(decision.grants) == {"monthly": 150}
    assert [e.kind for e in decision.entries] == [EntryKind.RELEASED, EntryKind.RESET]


def test_a_grant_that_expires_while_held_writes_the_rest_off() -> None:
    expires = NOW + timedelta(days=1)
    grants = [pack(100, expires)]
    held = hold(grants, 60)
    later = expires + timedelta(hours=1)
    decision = close(apply(grants, held.grants), parts_of(held), 20, at=later, now=later)
    assert [(e.kind, e.amount, e.balance_after) for e in decision.entries] == [
        (EntryKind.EXPIRED, -40, 0),
        (EntryKind.RELEASED, 60, 60),
        (EntryKind.CONSUMED, -20, 40),
        (EntryKind.EXPIRED, -40, 0),
    ]
    assert decision.consumed == 20 and decision.remaining == 0


def test_a_grant_revoked_while_held_writes_the_rest_off() -> None:
    grants = [pack(100)]
    held = hold(grants, 60)
    revoked, _ = revoke(apply(grants, held.grants)[0], NOW)
    decision = close([revoked], parts_of(held), 0)
    assert decision.entries == (
        PendingEntry("pack", EntryKind.RELEASED, 60, 60, NOW),
        PendingEntry("pack", EntryKind.REVOKED, -60, 0, NOW),
    )
    assert decision.remaining == 0


@pytest.mark.parametrize(
    ("ttl", "expected"), [(None, DEFAULT_TTL_SECONDS), (1, 1), (86_400, 86_400)]
)
def test_ttls_in_range(ttl: int | None, expected: int) -> None:
    assert require_ttl(ttl) == expected


@pytest.mark.parametrize("ttl", [0, -1, 86_401, 2**63, 1.5, 60.0, "60", True, [60]])
def test_ttls_out_of_range_are_invalid_arguments(ttl: object) -> None:
    with pytest.raises(RevenipeError) as raised:
        require_ttl(ttl)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_close_before_its_instant_or_of_a_negative_value_is_a_bug() -> None:
    with pytest.raises(InvariantViolation):
        close([pack(10)], [], -1)
    with pytest.raises(InvariantViolation):
        close([pack(10)], [], 0, at=NOW + timedelta(seconds=1))
