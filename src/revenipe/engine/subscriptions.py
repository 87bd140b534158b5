"""The life of a subscription: trial, billing periods, renewal, cancellation, plan change.

Pure rules, `now` passed in. A `Subscription` is the state of one recurring access
source. Providers report that state (Stripe and RevenueCat send it in their events); our
own sandbox provider computes it with `advance`, which renews every period as a card
that never fails would, so the whole life of a subscription can be replayed from the
timeline alone, like resets (docs/adr/0008).

What a state means for access: a live subscription (trialing, active, past due) gives
its product's grants until `access_ends_at`, the end of the period it is paid (or on
trial) through; a renewal moves that end to the next period's. An ended subscription
gave access until it ended.

Periods are half-open `[start, end)`, counted from `anchor` like resets: period k starts
at ``anchor + k * interval``. A trial is the period before the anchor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.periods import Duration, Interval, period_index, period_start


class SubscriptionStatus(StrEnum):
    """A subscription's status, as providers name it; trialing, active and past_due are
    live (`LIVE_STATUSES`): their grants pay until the access ends."""

    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    """A renewal payment failed; access continues while the provider retries."""
    CANCELED = "canceled"
    EXPIRED = "expired"
    """Ended by the provider at the end of its last period (a store subscription)."""


LIVE_STATUSES = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)


class ChangeType(StrEnum):
    """What a plan change is, by interval first, then price (`classify_change`)."""

    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    INTERVAL_UPGRADE = "interval_upgrade"
    INTERVAL_DOWNGRADE = "interval_downgrade"
    SAME_PRICE_SWITCH = "same_price_switch"


class BillingMode(StrEnum):
    """When a plan change takes effect: now, or at the end of the current period."""

    IMMEDIATE = "immediate"
    PERIOD_END = "period_end"


class ChangeStatus(StrEnum):
    """A plan change's status in the client protocol. The engine decides `pending` (it
    waits for the period's end), `access_applied` (done now) or `canceled` (dropped by
    asking for the current product); the other values are the protocol's."""

    PENDING = "pending"
    BILLING_APPLIED = "billing_applied"
    ACCESS_APPLIED = "access_applied"
    FAILED = "failed"
    CANCELED = "canceled"


class CancelMode(StrEnum):
    """When a canceled subscription's access ends: at the end of the period it is paid
    through, or now."""

    PERIOD_END = "period_end"
    IMMEDIATELY = "immediately"


_INTERVAL_RANK = {Interval.DAY: 0, Interval.WEEK: 1, Interval.MONTH: 2, Interval.YEAR: 3}


@dataclass(frozen=True, slots=True)
class Plan:
    """What the lifecycle needs to know of a recurring product."""

    product_id: str
    interval: Interval
    price: int = 0
    """Minor units per period; a product without a price counts as free."""


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A plan change that takes effect later (a downgrade, at the end of the period)."""

    change_id: str
    type: ChangeType
    billing_mode: BillingMode
    status: ChangeStatus
    from_product_id: str
    to_product_id: str
    to_interval: Interval
    effective_at: datetime


@dataclass(frozen=True, slots=True)
class Subscription:
    """One recurring access source's state."""

    product_id: str
    interval: Interval
    status: SubscriptionStatus
    anchor: datetime
    """Billing periods start at ``anchor + k * interval``; a trial ends at the anchor."""
    period_start: datetime
    period_end: datetime
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    payment_method_attached: bool = False
    pending_change: PendingChange | None = None

    @property
    def is_live(self) -> bool:
        """Whether its status is live (trialing, active or past_due)."""
        return self.status in LIVE_STATUSES

    @property
    def is_trial(self) -> bool:
        """Whether it is in its trial."""
        return self.status is SubscriptionStatus.TRIALING

    @property
    def access_ends_at(self) -> datetime:
        """When its grants stop paying, as things stand (a renewal moves it on)."""
        if self.ended_at is not None:
            return self.ended_at
        return self.period_end


@dataclass(frozen=True, slots=True)
class ProductChange:
    """At `at`, the subscription's product became `to_product_id`."""

    at: datetime
    from_product_id: str
    to_product_id: str


def start(
    plan: Plan, now: datetime, *, trial: Duration | None = None, payment_method_attached: bool
) -> Subscription:
    """A new subscription to `plan` at `now`, on trial first when `trial` is given."""
    if trial is not None:
        trial_end = trial.after(now)
        return Subscription(
            product_id=plan.product_id,
            interval=plan.interval,
            status=SubscriptionStatus.TRIALING,
            anchor=trial_end,
            period_start=now,
            period_end=trial_end,
            trial_end=trial_end,
            payment_method_attached=payment_method_attached,
        )
    return Subscription(
        product_id=plan.product_id,
        interval=plan.interval,
        status=SubscriptionStatus.ACTIVE,
        anchor=now,
        period_start=now,
        period_end=period_start(now, plan.interval, 1),
        payment_method_attached=payment_method_attached,
    )


def advance(sub: Subscription, now: datetime) -> tuple[Subscription, list[ProductChange]]:
    """The subscription at `now` under the sandbox's rules: every period renews, paid.

    At each period end that has passed, in order: a pending change takes effect; a
    subscription canceled at period end ends; a trial without a payment method ends (as
    Stripe's `missing_payment_method: cancel`), with one it becomes active; otherwise
    the next period begins. Returns the new state and the product changes it went
    through, each with the instant it happened.
    """
    changes: list[ProductChange] = []
    while sub.is_live and sub.period_end <= now:
        boundary = sub.period_end
        pending = sub.pending_change
        if pending is not None and pending.effective_at <= boundary:
            changes.append(ProductChange(boundary, sub.product_id, pending.to_product_id))
            if pending.to_interval is not sub.interval:
                sub = replace(sub, anchor=boundary)
            sub = replace(
                sub,
                product_id=pending.to_product_id,
                interval=pending.to_interval,
                pending_change=None,
            )
        if sub.cancel_at_period_end or (sub.is_trial and not sub.payment_method_attached):
            sub = replace(
                sub,
                status=SubscriptionStatus.CANCELED,
                ended_at=boundary,
                canceled_at=sub.canceled_at or boundary,
                pending_change=None,
            )
            break
        index = period_index(sub.anchor, sub.interval, boundary)
        sub = replace(
            sub,
            status=SubscriptionStatus.ACTIVE,
            period_start=boundary,
            period_end=period_start(sub.anchor, sub.interval, index + 1),
        )
    return sub, changes


def next_transition(sub: Subscription) -> datetime | None:
    """When `advance` will next change something (None once the subscription ended)."""
    return sub.period_end if sub.is_live else None


def _not_live(sub: Subscription) -> RevenipeError:
    return RevenipeError(
        ErrorCode.SUBSCRIPTION_NOT_ACTIVE,
        f"this subscription is {sub.status.value}; it can no longer be changed",
        field="source_id",
    )


def cancel(sub: Subscription, mode: CancelMode, now: datetime) -> Subscription:
    """Cancel at the end of the period (access until then) or immediately (access ends now).

    Canceling at period end twice is the same as once. A pending plan change is dropped.
    """
    if not sub.is_live:
        raise _not_live(sub)
    if mode is CancelMode.IMMEDIATELY:
        return replace(
            sub,
            status=SubscriptionStatus.CANCELED,
            ended_at=now,
            canceled_at=now,
            cancel_at_period_end=False,
            pending_change=None,
        )
    if sub.cancel_at_period_end:
        return sub
    return replace(sub, cancel_at_period_end=True, canceled_at=now, pending_change=None)


def uncancel(sub: Subscription) -> Subscription:
    """Undo a cancel at period end; the subscription renews again. Idempotent."""
    if not sub.is_live:
        raise _not_live(sub)
    return replace(sub, cancel_at_period_end=False, canceled_at=None)


def classify_change(current: Plan, new: Plan) -> tuple[ChangeType, BillingMode]:
    """What kind of change going from `current` to `new` is, and when it takes effect.

    A longer interval is an interval upgrade and a shorter one an interval downgrade;
    within one interval a higher price is an upgrade, a lower one a downgrade, the same
    price a switch. Upgrades and switches apply at once; downgrades at the period's end,
    so that what was paid for is kept until then.
    """
    if new.interval is not current.interval:
        if _INTERVAL_RANK[new.interval] > _INTERVAL_RANK[current.interval]:
            return ChangeType.INTERVAL_UPGRADE, BillingMode.IMMEDIATE
        return ChangeType.INTERVAL_DOWNGRADE, BillingMode.PERIOD_END
    if new.price > current.price:
        return ChangeType.UPGRADE, BillingMode.IMMEDIATE
    if new.price < current.price:
        return ChangeType.DOWNGRADE, BillingMode.PERIOD_END
    return ChangeType.SAME_PRICE_SWITCH, BillingMode.IMMEDIATE


@dataclass(frozen=True, slots=True)
class PlanChangeOutcome:
    """What `change_plan` decided: the subscription after it, and the change."""

    subscription: Subscription
    change: PendingChange
    """The change as decided: `access_applied` when immediate, `pending` otherwise,
    `canceled` when asking for the current product dropped a pending change."""
    product_change: ProductChange | None
    """Set when the product changed now."""


def change_plan(
    sub: Subscription, current: Plan, new: Plan, now: datetime, *, change_id: str
) -> PlanChangeOutcome:
    """Move the subscription to `new`: now for upgrades, at the period's end for downgrades.

    Asking for the product the subscription already has drops a pending change. A
    subscription set to cancel at period end must be uncanceled first. An immediate
    change of interval starts a new billing period now (as Stripe does); on trial, the
    trial goes on and the new plan bills from its end.
    """
    if not sub.is_live:
        raise _not_live(sub)
    if sub.cancel_at_period_end:
        raise RevenipeError(
            ErrorCode.SUBSCRIPTION_CANCELING,
            "this subscription is set to cancel at the end of its period; uncancel it "
            "before changing plan",
            field="source_id",
        )
    if new.product_id == sub.product_id:
        pending = sub.pending_change
        if pending is None:
            raise RevenipeError(
                ErrorCode.PLAN_CHANGE_NOT_ALLOWED,
                f"the subscription is already on {new.product_id!r}",
                field="new_product_id",
            )
        dropped = replace(pending, status=ChangeStatus.CANCELED)
        return PlanChangeOutcome(replace(sub, pending_change=None), dropped, None)
    change_type, mode = classify_change(current, new)
    if mode is BillingMode.PERIOD_END:
        pending = PendingChange(
            change_id=change_id,
            type=change_type,
            billing_mode=mode,
            status=ChangeStatus.PENDING,
            from_product_id=sub.product_id,
            to_product_id=new.product_id,
            to_interval=new.interval,
            effective_at=sub.period_end,
        )
        return PlanChangeOutcome(replace(sub, pending_change=pending), pending, None)
    applied = PendingChange(
        change_id=change_id,
        type=change_type,
        billing_mode=mode,
        status=ChangeStatus.ACCESS_APPLIED,
        from_product_id=sub.product_id,
        to_product_id=new.product_id,
        to_interval=new.interval,
        effective_at=now,
    )
    moved = replace(sub, product_id=new.product_id, interval=new.interval, pending_change=None)
    if new.interval is not sub.interval and not sub.is_trial:
        moved = replace(
            moved, anchor=now, period_start=now, period_end=period_start(now, new.interval, 1)
        )
    return PlanChangeOutcome(moved, applied, ProductChange(now, sub.product_id, new.product_id))


def attach_payment_method(sub: Subscription) -> Subscription:
    """A payment method is on file: a trial will convert when it ends. Idempotent."""
    if not sub.is_live:
        raise _not_live(sub)
    return replace(sub, payment_method_attached=True)
