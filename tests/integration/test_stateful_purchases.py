"""A stateful model test of purchases: the sandbox provider and the lifecycle rules, against
a model that lives through time eagerly.

Hypothesis runs random sequences of pack purchases, subscriptions (with and without a
trial, with and without a payment method), cancels (at period end, immediately),
uncancels, plan changes (upgrades, downgrades, interval changes), payment methods
attached, tracks and test-clock moves (hours to months, and straight onto the next
boundary) against a real database through the services, and after every step compares
the customer's balances and live subscriptions with a model written here from
docs/concepts/time.md#subscriptions, docs/concepts/purchases.md and docs/sandbox.md.
It imports nothing from the engine.

The implementation is lazy (nothing happens until a customer is touched, then every
boundary that passed is replayed at its own instant); the model is eager: each clock
move walks through every boundary in time order (renewals, trial ends, scheduled
cancels and plan changes first, then each grant's expiry, then its reset). The two must
agree at every step, which is the promise of docs/adr/0008.

Runs on SQLite and PostgreSQL, a fresh app per example. More examples:
`REVENIPE_STATEFUL_EXAMPLES=300 uv run pytest tests/integration/test_stateful_purchases.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import revenipe
from revenipe import RevenipeError
from revenipe.services.customers import CustomerRef, customer_state
from revenipe.services.purchases import orders as purchases
from revenipe.services.purchases.sandbox import checkout, clock
from revenipe.services.purchases.vocabulary import PurchaseRequest, StartedPurchase

from support import Clock, boundary

EXAMPLES = int(os.environ.get("REVENIPE_STATEFUL_EXAMPLES", "20"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BASE_URL = "http://revenipe.test"
CUSTOMER = "buyer"

CATALOG = """
entitlements:
  - {id: monthly_credits, name: Monthly credits, type: metered}
  - {id: purchased_credits, name: Purchased credits, type: metered}
usage_keys:
  - {id: credits, name: Credits, entitlements: [monthly_credits, purchased_credits]}
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    default: true
    grants:
      - {entitlement: monthly_credits, amount: 25, reset: period}
  - id: plan_a
    name: Plan A
    type: subscription
    recurring_interval: month
    price: 500
    trial: P3D
    grants:
      - {entitlement: monthly_credits, amount: 60, reset: period, rollover: {max: 30}}
  - id: plan_b
    name: Plan B
    type: subscription
    recurring_interval: month
    price: 1000
    grants:
      - {entitlement: monthly_credits, amount: 100, reset: period}
  - id: plan_y
    name: Plan Y
    type: subscription
    recurring_interval: year
    price: 5000
    grants:
      - {entitlement: monthly_credits, amount: 500, reset: period, rollover: {min: 5, max: 100}}
  - id: pack
    name: Pack
    type: one_time
    price: 300
    grants:
      - {entitlement: purchased_credits, amount: 40, expires_after: P10D}
"""

# --- the model's own copy of the catalog ---------------------------------------------


@dataclass(frozen=True)
class PlanTerms:
    interval: str
    price: int
    amount: int
    rollover: tuple[int, int]
    trial_days: int | None = None


PLANS = {
    "plan_a": PlanTerms("month", 500, 60, (0, 30), trial_days=3),
    "plan_b": PlanTerms("month", 1000, 100, (0, 0)),
    "plan_y": PlanTerms("year", 5000, 500, (5, 100)),
}
RANK = {"day": 0, "week": 1, "month": 2, "year": 3}
USAGE_KEY = ("monthly_credits", "purchased_credits")
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


@dataclass(eq=False)
class MGrant:
    entitlement: str
    amount: int
    balance: int
    created_at: datetime
    seq: int
    expires_at: datetime | None
    """When it stops paying: the sooner of its own term and its source's access end."""
    term: datetime | None = None
    reset: tuple[str, datetime] | None = None
    """(interval, anchor) of its resets."""
    rollover: tuple[int, int] = (0, 0)
    period_start: datetime | None = None
    alive: bool = True

    def next_reset(self) -> datetime | None:
        if self.reset is None or not self.alive:
            return None
        unit, anchor = self.reset
        start = self.period_start or self.created_at
        index = 0
        while boundary(anchor, unit, index) > start:
            index -= 1
        while boundary(anchor, unit, index) <= start:
            index += 1
        return boundary(anchor, unit, index)


@dataclass(eq=False)
class MSub:
    product: str
    interval: str
    anchor: datetime
    period_start: datetime
    period_end: datetime
    status: str
    payment_method: bool
    grants: list[MGrant]
    cancel_at_period_end: bool = False
    pending: str | None = None
    source_id: str | None = None

    @property
    def live(self) -> bool:
        return self.status in ("trialing", "active")


@dataclass
class Model:
    now: datetime
    grants: list[MGrant] = field(default_factory=list)
    subs: list[MSub] = field(default_factory=list)
    seq: int = 0

    def grant(self, entitlement: str, amount: int, **terms: Any) -> MGrant:
        self.seq += 1
        created = MGrant(entitlement, amount, amount, self.now, self.seq, **terms)
        self.grants.append(created)
        return created

    def live_sub(self) -> MSub | None:
        return next((s for s in self.subs if s.live), None)

    def plan_grants(self, sub: MSub, start: datetime) -> list[MGrant]:
        terms = PLANS[sub.product]
        self.seq += 1
        created = MGrant(
            "monthly_credits",
            terms.amount,
            terms.amount,
            start,
            self.seq,
            expires_at=sub.period_end,
            reset=(sub.interval, sub.anchor),
            rollover=terms.rollover,
            period_start=start,
        )
        self.grants.append(created)
        return [created]

    def end_grants(self, sub: MSub, at: datetime) -> None:
        for g in sub.grants:
            if g.alive:
                g.expires_at = at if g.expires_at is None else min(g.expires_at, at)
                g.term = g.expires_at

    # -- time -------------------------------------------------------------------------

    def advance(self, to: datetime) -> None:
        while True:
            moments = [s.period_end for s in self.subs if s.live and s.period_end <= to]
            for g in self.grants:
                if not g.alive:
                    continue
                if g.expires_at is not None and g.expires_at <= to:
                    moments.append(g.expires_at)
                reset = g.next_reset()
                if reset is not None and reset <= to:
                    moments.append(reset)
            if not moments:
                break
            self.happen(min(moments))
        self.now = to

    def happen(self, t: datetime) -> None:
        for sub in self.subs:
            if sub.live and sub.period_end == t:
                self.period_end(sub, t)
        for g in self.grants:
            if g.alive and g.expires_at is not None and g.expires_at <= t:
                g.alive = False
                g.balance = 0
        for g in self.grants:
            if g.next_reset() == t:
                low, high = g.rollover
                g.balance = g.amount + min(high, max(g.balance, low))
                g.period_start = t

    def period_end(self, sub: MSub, t: datetime) -> None:
        if sub.pending is not None:
            to = sub.pending
            self.end_grants(sub, t)
            if PLANS[to].interval != sub.interval:
                sub.anchor = t
            sub.product, sub.interval, sub.pending = to, PLANS[to].interval, None
            sub.grants += self.plan_grants_at(sub, t)
        if sub.cancel_at_period_end or (sub.status == "trialing" and not sub.payment_method):
            sub.status = "canceled"
            for g in sub.grants:
                if g.alive and g.term is None:
                    g.expires_at = t
            return
        sub.status = "active"
        sub.period_start = t
        index = 0
        while boundary(sub.anchor, sub.interval, index) <= t:
            index += 1
        sub.period_end = boundary(sub.anchor, sub.interval, index)
        for g in sub.grants:
            if g.alive and g.term is None:
                g.expires_at = sub.period_end

    def plan_grants_at(self, sub: MSub, start: datetime) -> list[MGrant]:
        # The new plan's grants begin at the change; they pay until the period's end
        # (set by the renewal that follows in the same instant).
        made = self.plan_grants(sub, start)
        for g in made:
            g.expires_at = None
        return made

    # -- spending ---------------------------------------------------------------------

    def spend(self, value: int) -> tuple[bool, int]:
        usable = [
            g for g in self.grants if g.alive and (g.expires_at is None or g.expires_at > self.now)
        ]
        usable.sort(
            key=lambda g: (
                USAGE_KEY.index(g.entitlement),
                g.expires_at or FAR_FUTURE,
                g.expires_at is None,
                g.created_at,
                g.seq,
            )
        )
        available = sum(g.balance for g in usable)
        if available < value:
            return False, available
        left = value
        for g in usable:
            take = min(left, g.balance)
            g.balance -= take
            left -= take
        return True, available - value

    def total(self) -> int:
        return sum(g.balance for g in self.grants if g.alive)


class PurchaseMachine(RuleBasedStateMachine):
    database_url: ClassVar[str]

    @initialize()
    def start(self) -> None:
        self.clock = Clock(datetime(2026, 1, 31, 12, 0, tzinfo=UTC))
        self.backend = revenipe.open(self.database_url, clock=self.clock)
        created = self.backend.create_app("stateful", revenipe.load_catalog(CATALOG), sandbox=True)
        self.app_id = created.app.id
        self.ctx = self.backend.context
        self.customer_id = self.backend.app(self.app_id).login(CUSTOMER)
        self.model = Model(self.clock.now)
        self.model.grant(
            "monthly_credits",
            25,
            reset=("month", self.clock.now),
            period_start=self.clock.now,
            expires_at=None,
        )

    def teardown(self) -> None:
        if hasattr(self, "backend"):
            self.backend.close()

    # -- helpers ------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.model.now

    def state(self) -> Any:
        return customer_state(self.ctx, self.app_id, CustomerRef(customer_id=self.customer_id))

    def buy(self, product: str, **request: Any) -> StartedPurchase:
        return purchases.start_purchase(
            self.ctx,
            self.app_id,
            self.customer_id,
            PurchaseRequest(product_id=product, **request),
            public_base_url=BASE_URL,
        )

    def refused(self, code: str, call: Any) -> None:
        try:
            call()
        except RevenipeError as error:
            assert error.code.value == code, (code, error.code, error.message)
        else:
            raise AssertionError(f"expected {code}")

    # -- rules ----------------------------------------------------------------------------

    @rule()
    def buy_pack(self) -> None:
        started = self.buy("pack", purchase_method="hosted_checkout")
        assert started.checkout is not None
        done = checkout.complete_checkout(self.ctx, started.checkout.session_id, pay=True)
        assert done.status == "complete"
        self.model.grant(
            "purchased_credits",
            40,
            expires_at=self.now + timedelta(days=10),
            term=self.now + timedelta(days=10),
        )

    @rule(product=st.sampled_from(sorted(PLANS)), direct_trial=st.booleans())
    def subscribe(self, product: str, direct_trial: bool) -> None:
        terms = PLANS[product]
        if self.model.live_sub() is not None:
            self.refused(
                "subscription_exists", lambda: self.buy(product, purchase_method="hosted_checkout")
            )
            return
        if terms.trial_days is not None and direct_trial:
            started = self.buy(
                product, purchase_method="payment_sheet", trial_payment_method_behavior="direct"
            )
            assert started.subscription is not None
            source_id = started.subscription.subscription_id
            payment_method = False
        else:
            started = self.buy(product, purchase_method="hosted_checkout")
            assert started.checkout is not None
            done = checkout.complete_checkout(self.ctx, started.checkout.session_id, pay=True)
            source_id = done.access_source_id
            payment_method = True
        if terms.trial_days is not None:
            trial_end = self.now + timedelta(days=terms.trial_days)
            sub = MSub(
                product,
                terms.interval,
                trial_end,
                self.now,
                trial_end,
                "trialing",
                payment_method,
                [],
            )
        else:
            sub = MSub(
                product,
                terms.interval,
                self.now,
                self.now,
                boundary(self.now, terms.interval, 1),
                "active",
                payment_method,
                [],
            )
        sub.source_id = source_id
        sub.grants = self.model.plan_grants(sub, self.now)
        self.model.subs.append(sub)

    @rule(immediately=st.booleans())
    def cancel(self, immediately: bool) -> None:
        sub = self.any_sub()
        if sub is None:
            return
        mode = "immediately" if immediately else "period_end"
        call = lambda: purchases.cancel_subscription(  # noqa: E731
            self.ctx, self.app_id, self.customer_id, sub.source_id, mode
        )
        if not sub.live:
            self.refused("subscription_not_active", call)
            return
        outcome = call()
        assert outcome.success
        sub.pending = None
        if immediately:
            sub.status = "canceled"
            self.model.end_grants(sub, self.now)
            self.model.happen(self.now)
        else:
            sub.cancel_at_period_end = True
            assert outcome.cancels_at == sub.period_end

    @rule()
    def uncancel(self) -> None:
        sub = self.any_sub()
        if sub is None:
            return
        call = lambda: purchases.uncancel_subscription(  # noqa: E731
            self.ctx, self.app_id, self.customer_id, sub.source_id
        )
        if not sub.live:
            self.refused("subscription_not_active", call)
            return
        call()
        sub.cancel_at_period_end = False

    @rule(to=st.sampled_from(sorted(PLANS)))
    def change_plan(self, to: str) -> None:
        sub = self.any_sub()
        if sub is None:
            return
        call = lambda: purchases.change_plan(  # noqa: E731
            self.ctx, self.app_id, self.customer_id, sub.source_id, to
        )
        if not sub.live:
            self.refused("subscription_not_active", call)
            return
        if sub.cancel_at_period_end:
            self.refused("subscription_canceling", call)
            return
        if to == sub.product:
            if sub.pending is None:
                self.refused("plan_change_not_allowed", call)
            else:
                assert call().status == "canceled"
                sub.pending = None
            return
        current, new = PLANS[sub.product], PLANS[to]
        if new.interval != current.interval:
            immediate = RANK[new.interval] > RANK[current.interval]
        else:
            immediate = new.price >= current.price
        outcome = call()
        if not immediate:
            assert (outcome.billing_mode, outcome.status) == ("period_end", "pending")
            assert outcome.effective_at == sub.period_end
            sub.pending = to
            return
        assert (outcome.billing_mode, outcome.status) == ("immediate", "access_applied")
        self.model.end_grants(sub, self.now)
        self.model.happen(self.now)
        if new.interval != current.interval and sub.status != "trialing":
            sub.anchor = sub.period_start = self.now
            sub.period_end = boundary(self.now, new.interval, 1)
        sub.product, sub.interval, sub.pending = to, new.interval, None
        sub.grants += self.model.plan_grants(sub, self.now)

    @rule()
    def attach_payment_method(self) -> None:
        sub = self.any_sub()
        if sub is None or not sub.live:
            return
        outcome = purchases.attach_payment_method(
            self.ctx,
            self.app_id,
            self.customer_id,
            sub.source_id,
            "payment_sheet",
            public_base_url=BASE_URL,
        )
        assert outcome.payment_sheet is not None
        secret = outcome.payment_sheet.setup_intent_client_secret
        assert secret is not None
        done = checkout.confirm_intent(self.ctx, secret.split("_secret_")[0], secret)
        assert done.status == "complete"
        sub.payment_method = True

    @rule(value=st.one_of(st.integers(1, 40), st.integers(41, 700)))
    def track(self, value: int) -> None:
        result = self.backend.app(self.app_id).track(CUSTOMER, "credits", value)
        success, remaining = self.model.spend(value)
        assert (result.success, result.remaining) == (success, remaining), (result, self.model)

    @rule(
        step=st.one_of(
            st.integers(1, 47).map(lambda n: timedelta(hours=n)),
            st.integers(1, 40).map(lambda n: timedelta(days=n)),
            st.integers(1, 14).map(lambda n: timedelta(days=31 * n)),
        )
    )
    def move_clock(self, step: timedelta) -> None:
        self.move_to(self.now + step)

    @precondition(lambda self: self.next_moment() is not None)
    @rule()
    def move_onto_the_next_boundary(self) -> None:
        moment = self.next_moment()
        assert moment is not None
        self.move_to(moment)

    def next_moment(self) -> datetime | None:
        if not hasattr(self, "model"):
            return None
        moments = [s.period_end for s in self.model.subs if s.live]
        for g in self.model.grants:
            if g.alive:
                moments += [m for m in (g.expires_at, g.next_reset()) if m is not None]
        upcoming = [m for m in moments if m > self.now]
        return min(upcoming) if upcoming else None

    def move_to(self, moment: datetime) -> None:
        seconds = int((moment - self.now).total_seconds())
        if seconds <= 0:
            return
        moment = self.now + timedelta(seconds=seconds)
        clock.advance_clock(self.ctx, self.app_id, seconds)
        self.model.advance(moment)

    def any_sub(self) -> MSub | None:
        live = self.model.live_sub()
        return live or (self.model.subs[-1] if self.model.subs else None)

    # -- the comparison ----------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        state = self.state()
        (key,) = state.usage_keys
        assert key.remaining == self.model.total(), (state, self.model)
        live = {
            s.source.id: (s.source.product_id, s.source.status, s.source.cancel_at_period_end)
            for s in state.subscriptions()
            if s.source.kind == "subscription"
        }
        expected = {
            s.source_id: (s.product, s.status, s.cancel_at_period_end)
            for s in self.model.subs
            if s.live
        }
        assert live == expected, (live, expected)
        for sub in self.model.subs:
            if not sub.live:
                continue
            (held,) = (s for s in state.subscriptions() if s.source.id == sub.source_id)
            assert held.period_end == sub.period_end, (held, sub)
            pending = held.pending_change
            assert (pending.to_product_id if pending else None) == sub.pending
        report = self.backend.verify(self.app_id)
        assert report.ok, report.problems


@pytest.mark.slow
def test_purchases_agree_with_the_model(database_url: str) -> None:
    PurchaseMachine.database_url = database_url
    run_state_machine_as_test(PurchaseMachine, settings=SETTINGS)
