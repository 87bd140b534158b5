"""The pure rules: burn order, all-or-nothing, resets with rollover, expiry."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from revenipe.engine.burn import decide_burn, order_grants
from revenipe.engine.errors import RefusalCode
from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    ResetRule,
    Rollover,
    settle,
)
from revenipe.engine.periods import Interval

T0 = datetime(2026, 1, 31, 12, tzinfo=UTC)


def grant(
    gid: str,
    balance: int,
    *,
    entitlement: str = "e",
    priority: int = 0,
    expires_at: datetime | None = None,
    created_at: datetime = T0,
    reset: ResetRule | None = None,
    amount: int | None = None,
) -> Grant:
    return Grant(
        id=gid,
        entitlement_id=entitlement,
        source_id="s",
        amount=amount or balance,
        balance=balance,
        priority=priority,
        created_at=created_at,
        period_start=created_at,
        expires_at=expires_at,
        reset=reset,
    )


def test_burn_order_priority_then_expiry_then_age_then_id() -> None:
    grants = [
        grant("g-never", 5),
        grant("g-late", 5, expires_at=T0 + timedelta(days=9)),
        grant("g-soon", 5, expires_at=T0 + timedelta(days=1)),
        grant("g-prio", 5, priority=-1),
        grant("g-old-b", 5, created_at=T0 - timedelta(days=2)),
        grant("g-old-a", 5, created_at=T0 - timedelta(days=2)),
    ]
    ordered = [g.id for g in order_grants(grants, ["e"])]
    assert ordered == ["g-prio", "g-soon", "g-late", "g-old-a", "g-old-b", "g-never"]


def test_usage_key_draws_entitlements_in_declared_order() -> None:
    grants = [grant("b1", 5, entitlement="b", priority=-5), grant("a1", 5, entitlement="a")]
    ordered = order_grants(grants, ["a", "b"])
    decision = decide_burn(ordered, 7, T0)
    assert [(d.grant_id, d.amount) for d in decision.draws] == [("a1", 5), ("b1", 2)]
    assert decision.remaining == 3


def test_all_or_nothing() -> None:
    decision = decide_burn([grant("a", 3), grant("b", 3)], 7, T0)
    assert not decision.success
    assert decision.refusal is RefusalCode.INSUFFICIENT_BALANCE
    assert decision.draws == ()
    assert decision.remaining == 6


def test_expired_grant_does_not_pay() -> None:
    expired = grant("x", 10, expires_at=T0)
    decision = decide_burn([expired, grant("y", 2)], 3, T0)
    assert not decision.success
    assert decision.available == 2


def test_monthly_reset_refills_and_writes_one_entry_per_changed_period() -> None:
    rule = ResetRule(Interval.MONTH, T0)
    g = replace(grant("m", 100, reset=rule), balance=30)
    settled, entries = settle(g, T0 + timedelta(days=29))  # 2026-03-01: past Feb 28
    assert settled.balance == 100
    assert settled.period_start == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert [(e.kind, e.amount, e.effective_at) for e in entries] == [
        (EntryKind.RESET, 70, datetime(2026, 2, 28, 12, tzinfo=UTC))
    ]


def test_reset_is_lazy_and_skips_unchanged_periods() -> None:
    rule = ResetRule(Interval.DAY, T0)
    g = replace(grant("d", 10, reset=rule), balance=4)
    settled, entries = settle(g, T0 + timedelta(days=1000, hours=1))
    assert settled.balance == 10
    assert len(entries) == 1
    assert settled.period_start == T0 + timedelta(days=1000)


def test_rollover_carries_leftover_up_to_max() -> None:
    rule = ResetRule(Interval.MONTH, T0, Rollover(min=0, max=50))
    g = replace(grant("r", 100, reset=rule), balance=80)
    settled, _ = settle(g, T0 + timedelta(days=29))
    assert settled.balance == 150  # 100 refill + 50 carried (80 left, capped at 50)
    settled2, _ = settle(replace(g, balance=20), T0 + timedelta(days=29))
    assert settled2.balance == 120
    # A second untouched month: leftover 150 -> 100 + min(50, 150).
    settled3, entries3 = settle(g, T0 + timedelta(days=60))
    assert settled3.balance == 150
    assert [e.amount for e in entries3] == [70]


def test_rollover_min_guarantees_a_carry() -> None:
    rule = ResetRule(Interval.MONTH, T0, Rollover(min=5, max=10))
    settled, _ = settle(replace(grant("r", 100, reset=rule), balance=0), T0 + timedelta(days=29))
    assert settled.balance == 105


def test_expiry_writes_off_leftover_at_expiry_time() -> None:
    expiry = T0 + timedelta(days=30)
    settled, entries = settle(grant("x", 40, expires_at=expiry), expiry + timedelta(days=5))
    assert settled.status is GrantStatus.EXPIRED
    assert settled.balance == 0
    assert [(e.kind, e.amount, e.effective_at) for e in entries] == [
        (EntryKind.EXPIRED, -40, expiry)
    ]


def test_no_reset_at_or_after_expiry() -> None:
    rule = ResetRule(Interval.DAY, T0)
    g = replace(grant("x", 10, reset=rule, expires_at=T0 + timedelta(days=2)), balance=3)
    settled, entries = settle(g, T0 + timedelta(days=10))
    # One reset (day 1); the day-2 boundary coincides with expiry and never happens.
    assert [e.kind for e in entries] == [EntryKind.RESET, EntryKind.EXPIRED]
    assert [e.amount for e in entries] == [7, -10]
    assert settled.balance == 0


def test_settle_is_idempotent() -> None:
    rule = ResetRule(Interval.WEEK, T0, Rollover(max=3))
    g = replace(grant("w", 10, reset=rule), balance=1)
    now = T0 + timedelta(weeks=5)
    once, _ = settle(g, now)
    twice, entries = settle(once, now)
    assert twice == once
    assert entries == []


def test_settle_within_the_period_changes_nothing_up_to_the_boundary() -> None:
    # Settling's shortcut (no boundary since the period began) against the full replay:
    # unchanged up to the boundary's last microsecond, reset at the boundary itself.
    rule = ResetRule(Interval.MONTH, T0)
    g = replace(grant("m", 100, reset=rule), balance=30)
    boundary = datetime(2026, 2, 28, 12, tzinfo=UTC)
    for now in (T0, T0 + timedelta(days=10), boundary - timedelta(microseconds=1)):
        assert settle(g, now) == (g, [])
    settled, entries = settle(g, boundary)
    assert (settled.balance, settled.period_start) == (100, boundary)
    assert [(e.kind, e.amount) for e in entries] == [(EntryKind.RESET, 70)]
    # A period begun off the grid (a trial's end before the anchor): its first boundary
    # is the anchor.
    trial = replace(g, period_start=T0 - timedelta(days=3))
    assert settle(trial, T0 - timedelta(microseconds=1)) == (trial, [])
    assert settle(trial, T0)[0].period_start == T0
