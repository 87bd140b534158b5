"""The subscription lifecycle's pure rules (engine/subscriptions.py) and the grant rules
purchases rely on (extend, revoke, a first period that begins off its grid)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revenipe.engine import subscriptions as life
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    ResetRule,
    Rollover,
    extend,
    revoke,
    settle,
)
from revenipe.engine.periods import Duration, Interval
from revenipe.engine.subscriptions import (
    BillingMode,
    CancelMode,
    ChangeStatus,
    ChangeType,
    Plan,
    SubscriptionStatus,
)

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
MONTHLY = Plan("pro", Interval.MONTH, 1000)
BASIC = Plan("basic", Interval.MONTH, 500)
YEARLY = Plan("pro_year", Interval.YEAR, 10000)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def test_a_new_subscription_is_active_for_one_period_from_now() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert (sub.period_start, sub.period_end) == (T0, datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert sub.access_ends_at == sub.period_end
    assert life.next_transition(sub) == sub.period_end


def test_renewals_follow_the_anchor_with_month_end_clamping() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    renewed, changes = life.advance(sub, datetime(2026, 4, 15, tzinfo=UTC))
    assert changes == []
    assert renewed.status is SubscriptionStatus.ACTIVE
    # Jan 31 -> Feb 28 -> Mar 31 -> Apr 30: back to the 31st after a short month.
    assert renewed.period_start == datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert renewed.period_end == datetime(2026, 4, 30, 12, tzinfo=UTC)


def test_nothing_happens_before_the_period_ends() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    assert life.advance(sub, sub.period_end - timedelta(microseconds=1)) == (sub, [])


def test_cancel_at_period_end_keeps_access_until_then_and_ends_there() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    canceling = life.cancel(sub, CancelMode.PERIOD_END, at(3))
    assert canceling.is_live and canceling.cancel_at_period_end
    assert canceling.access_ends_at == sub.period_end
    assert life.cancel(canceling, CancelMode.PERIOD_END, at(4)) == canceling
    ended, _ = life.advance(canceling, at(100))
    assert ended.status is SubscriptionStatus.CANCELED
    assert ended.ended_at == sub.period_end and ended.access_ends_at == sub.period_end
    assert life.next_transition(ended) is None


def test_uncancel_makes_it_renew_again() -> None:
    sub = life.cancel(
        life.start(MONTHLY, T0, payment_method_attached=True), CancelMode.PERIOD_END, at(1)
    )
    back = life.uncancel(sub)
    assert not back.cancel_at_period_end and back.canceled_at is None
    renewed, _ = life.advance(back, at(40))
    assert renewed.status is SubscriptionStatus.ACTIVE
    assert life.uncancel(back) == back


def test_cancel_immediately_ends_access_now() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    ended = life.cancel(sub, CancelMode.IMMEDIATELY, at(5))
    assert ended.status is SubscriptionStatus.CANCELED and ended.access_ends_at == at(5)


@pytest.mark.parametrize(
    "rule",
    [
        lambda s: life.cancel(s, CancelMode.PERIOD_END, at(60)),
        lambda s: life.cancel(s, CancelMode.IMMEDIATELY, at(60)),
        lambda s: life.uncancel(s),
        lambda s: life.attach_payment_method(s),
        lambda s: life.change_plan(s, MONTHLY, BASIC, at(60), change_id="chg_1"),
    ],
)
def test_an_ended_subscription_cannot_change(rule: object) -> None:
    sub = life.cancel(
        life.start(MONTHLY, T0, payment_method_attached=True), CancelMode.IMMEDIATELY, at(1)
    )
    with pytest.raises(RevenipeError) as caught:
        rule(sub)  # type: ignore[operator]
    assert caught.value.code is ErrorCode.SUBSCRIPTION_NOT_ACTIVE


def test_a_trial_ends_at_its_anchor_and_converts_with_a_payment_method() -> None:
    sub = life.start(MONTHLY, T0, trial=Duration(days=7), payment_method_attached=True)
    assert sub.status is SubscriptionStatus.TRIALING and sub.is_trial
    assert sub.trial_end == sub.anchor == sub.period_end == at(7)
    paid, _ = life.advance(sub, at(8))
    assert paid.status is SubscriptionStatus.ACTIVE
    assert (paid.period_start, paid.period_end) == (at(7), datetime(2026, 3, 7, 12, tzinfo=UTC))


def test_a_trial_without_payment_method_ends_with_the_trial() -> None:
    sub = life.start(MONTHLY, T0, trial=Duration(days=7), payment_method_attached=False)
    ended, _ = life.advance(sub, at(30))
    assert ended.status is SubscriptionStatus.CANCELED and ended.ended_at == at(7)
    attached = life.attach_payment_method(sub)
    converted, _ = life.advance(attached, at(30))
    assert converted.status is SubscriptionStatus.ACTIVE


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (BASIC, MONTHLY, (ChangeType.UPGRADE, BillingMode.IMMEDIATE)),
        (MONTHLY, BASIC, (ChangeType.DOWNGRADE, BillingMode.PERIOD_END)),
        (MONTHLY, YEARLY, (ChangeType.INTERVAL_UPGRADE, BillingMode.IMMEDIATE)),
        (YEARLY, BASIC, (ChangeType.INTERVAL_DOWNGRADE, BillingMode.PERIOD_END)),
        (
            MONTHLY,
            Plan("team", Interval.MONTH, 1000),
            (ChangeType.SAME_PRICE_SWITCH, BillingMode.IMMEDIATE),
        ),
        # Cheaper per period but a longer interval is an interval upgrade.
        (
            MONTHLY,
            Plan("w", Interval.YEAR, 1),
            (ChangeType.INTERVAL_UPGRADE, BillingMode.IMMEDIATE),
        ),
    ],
)
def test_changes_are_classified(current: Plan, new: Plan, expected: tuple[object, object]) -> None:
    assert life.classify_change(current, new) == expected


def test_a_downgrade_waits_for_the_period_end() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    outcome = life.change_plan(sub, MONTHLY, BASIC, at(10), change_id="chg_1")
    assert outcome.product_change is None
    assert outcome.change.status is ChangeStatus.PENDING
    assert outcome.change.effective_at == sub.period_end
    assert outcome.subscription.product_id == "pro"
    moved, changes = life.advance(outcome.subscription, at(40))
    assert moved.product_id == "basic" and moved.pending_change is None
    assert changes == [life.ProductChange(sub.period_end, "pro", "basic")]


def test_asking_for_the_current_plan_drops_a_pending_change() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    pending = life.change_plan(sub, MONTHLY, BASIC, at(10), change_id="chg_1").subscription
    dropped = life.change_plan(pending, MONTHLY, MONTHLY, at(11), change_id="chg_2")
    assert dropped.change.status is ChangeStatus.CANCELED
    assert dropped.subscription.pending_change is None
    with pytest.raises(RevenipeError) as caught:
        life.change_plan(sub, MONTHLY, MONTHLY, at(11), change_id="chg_3")
    assert caught.value.code is ErrorCode.PLAN_CHANGE_NOT_ALLOWED


def test_an_upgrade_applies_now_and_keeps_the_billing_cycle() -> None:
    sub = life.start(BASIC, T0, payment_method_attached=True)
    outcome = life.change_plan(sub, BASIC, MONTHLY, at(10), change_id="chg_1")
    assert outcome.subscription.product_id == "pro"
    assert outcome.subscription.anchor == T0 and outcome.subscription.period_end == sub.period_end
    assert outcome.product_change == life.ProductChange(at(10), "basic", "pro")
    assert outcome.change.status is ChangeStatus.ACCESS_APPLIED


def test_an_interval_upgrade_starts_a_new_billing_period_now() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    outcome = life.change_plan(sub, MONTHLY, YEARLY, at(10), change_id="chg_1")
    moved = outcome.subscription
    assert (moved.anchor, moved.period_start) == (at(10), at(10))
    assert moved.period_end == datetime(2027, 2, 10, 12, tzinfo=UTC)


def test_changing_plan_while_set_to_cancel_is_refused() -> None:
    sub = life.cancel(
        life.start(MONTHLY, T0, payment_method_attached=True), CancelMode.PERIOD_END, at(1)
    )
    with pytest.raises(RevenipeError) as caught:
        life.change_plan(sub, MONTHLY, BASIC, at(2), change_id="chg_1")
    assert caught.value.code is ErrorCode.SUBSCRIPTION_CANCELING


def test_canceling_drops_a_pending_change() -> None:
    sub = life.start(MONTHLY, T0, payment_method_attached=True)
    pending = life.change_plan(sub, MONTHLY, BASIC, at(10), change_id="chg_1").subscription
    assert life.cancel(pending, CancelMode.PERIOD_END, at(11)).pending_change is None


_steps = st.lists(st.integers(min_value=0, max_value=400 * 24), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    hours=_steps,
    trial=st.sampled_from([None, Duration(days=7), Duration(months=1)]),
    attached=st.booleans(),
    cancel_after=st.one_of(st.none(), st.integers(min_value=0, max_value=300 * 24)),
)
def test_advancing_in_steps_equals_advancing_at_once(
    hours: list[int], trial: Duration | None, attached: bool, cancel_after: int | None
) -> None:
    """The lazy rule: catching up now and then gives what catching up once would."""
    start = life.start(MONTHLY, T0, trial=trial, payment_method_attached=attached)
    if cancel_after is not None:
        canceled_at = T0 + timedelta(hours=cancel_after)
        caught_up, _ = life.advance(start, canceled_at)
        if caught_up.is_live:
            start = life.cancel(caught_up, CancelMode.PERIOD_END, canceled_at)
        else:
            start = caught_up
    moments = sorted(T0 + timedelta(hours=h) for h in hours)
    stepped = start
    stepped_changes: list[life.ProductChange] = []
    for moment in moments:
        stepped, changes = life.advance(stepped, max(moment, start.period_start))
        stepped_changes += changes
    once, once_changes = life.advance(start, max(moments[-1], start.period_start))
    assert stepped == once and stepped_changes == once_changes
    assert once.period_start <= once.period_end
    if once.is_live:
        assert once.period_end > max(moments[-1], start.period_start)


# --- grants under purchases -------------------------------------------------------------


def _grant(**changes: object) -> Grant:
    grant = Grant(
        id="grt_1",
        entitlement_id="monthly_credits",
        source_id="src_1",
        amount=100,
        balance=100,
        priority=0,
        created_at=T0,
        period_start=T0,
        expires_at=datetime(2026, 2, 28, 12, tzinfo=UTC),
        reset=ResetRule(Interval.MONTH, T0, Rollover(0, 50)),
    )
    return replace(grant, **changes)  # type: ignore[arg-type]


def test_a_grant_begun_in_a_trial_first_resets_at_the_anchor() -> None:
    # Made at T0 on a trial whose end (the anchor) is 7 days later.
    grant = _grant(reset=ResetRule(Interval.MONTH, at(7), Rollover()), expires_at=None, balance=40)
    same, entries = settle(grant, at(3))
    assert (same, entries) == (grant, [])
    after, entries = settle(grant, at(8))
    assert [(e.kind, e.amount, e.effective_at) for e in entries] == [(EntryKind.RESET, 60, at(7))]
    assert after.balance == 100 and after.period_start == at(7)


def test_a_renewal_confirmed_late_revives_the_grant_as_the_reset_would_have() -> None:
    expired, entries = settle(_grant(balance=70), at(40))
    assert expired.status is GrantStatus.EXPIRED
    assert [(e.kind, e.amount) for e in entries] == [(EntryKind.EXPIRED, -70)]
    revived, entries = extend(expired, datetime(2026, 3, 31, 12, tzinfo=UTC), written_off=70)
    # The boundary at Feb 28 was a reset: 100 plus min(50, 70) carried.
    assert revived.status is GrantStatus.ACTIVE and revived.balance == 150
    assert [(e.kind, e.amount, e.effective_at) for e in entries] == [
        (EntryKind.RESET, 150, datetime(2026, 2, 28, 12, tzinfo=UTC))
    ]
    on_time, _ = settle(
        _grant(balance=70, expires_at=datetime(2026, 3, 31, 12, tzinfo=UTC)), at(40)
    )
    assert settle(revived, at(40))[0].balance == on_time.balance == 150


def test_an_access_end_moved_off_a_boundary_gives_back_the_leftover() -> None:
    grant = _grant(reset=None, balance=30, expires_at=at(10))
    expired, _ = settle(grant, at(20))
    revived, entries = extend(expired, at(30), written_off=30)
    assert revived.balance == 30 and revived.expires_at == at(30)
    assert [(e.kind, e.amount) for e in entries] == [(EntryKind.ADJUSTED, 30)]


def test_an_earlier_end_or_a_revoked_grant_is_not_revived() -> None:
    expired, _ = settle(_grant(balance=70), at(40))
    assert extend(expired, at(20), written_off=70) == (expired, [])
    revoked, _ = revoke(_grant(balance=70), at(3))
    assert extend(revoked, at(90), written_off=0) == (revoked, [])


def test_revoking_takes_back_what_is_left_after_settling() -> None:
    revoked, entries = revoke(_grant(balance=70), at(35))
    assert revoked.status is GrantStatus.REVOKED and revoked.balance == 0
    # Expired at Feb 28 first (the access end): nothing left to revoke after.
    assert [e.kind for e in entries] == [EntryKind.EXPIRED]
    revoked, entries = revoke(_grant(balance=70), at(3))
    assert [(e.kind, e.amount, e.balance_after) for e in entries] == [(EntryKind.REVOKED, -70, 0)]
