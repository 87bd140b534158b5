"""A stateful model test: the real storage, driven through the embedded API, against a model.

Hypothesis runs random sequences of grants (entitlement amounts and catalog products,
with expiry, priority, resets and rollover), tracks (entitlement ids, usage keys, priced
actions, batches of them, an access source, values bigger than the balance, idempotency
keys), checks, reversals and clock moves (microseconds to months, and straight onto
reset and expiry boundaries) against a real database, and after every step compares each
customer's balances with a plain Python model written here from docs/concepts (it
imports nothing from the engine), then checks the ledger invariants (`Backend.verify`,
docs/concepts/README.md#invariants).

The rules the model encodes (docs/concepts/track.md#burn-order, docs/concepts/time.md
and docs/concepts/reversal.md#the-rule): at each reset
`balance = amount + min(max, max(leftover, min))`; burn order is the usage key's
entitlements in declared order, then lower priority, then soonest expiry (never-expiring
last), then oldest grant, then id; a priced action (docs/concepts/catalog.md#costs) is a
track of its usage key for value x price, and a product beyond 2^53-1 is bad input
that changes nothing; expired grants do not pay and their leftover is
written off; a reversal gives back into the grants that paid, the last-drawn first, and
a grant that has since expired writes the credit off at once.

Runs on SQLite and PostgreSQL, a fresh app per example. More examples:
`REVENIPE_STATEFUL_EXAMPLES=500 uv run pytest tests/integration/test_stateful_model.py`.
A failure is shrunk to a short list of steps; shrinking can take a few minutes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
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
from revenipe import ErrorCode, RevenipeError

from support import Clock, boundary, months_later

MAX_AMOUNT = 2**53 - 1
EXAMPLES = int(os.environ.get("REVENIPE_STATEFUL_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CATALOG = """
entitlements:
  - id: monthly_credits
    name: Monthly credits
    type: metered
  - id: daily_credits
    name: Daily credits
    type: metered
  - id: bonus_credits
    name: Bonus credits
    type: metered
  - id: purchased_credits
    name: Purchased credits
    type: metered
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [daily_credits, monthly_credits, bonus_credits, purchased_credits]
    costs: {image_generation: 5, export_4k: 20}
  - id: spare
    name: Spare credits
    entitlements: [purchased_credits, bonus_credits]
    costs: {spare_action: 3, huge_job: 1125899906842624}
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    default: true
    grants:
      - entitlement: monthly_credits
        amount: 25
        reset: period
      - entitlement: export_hd
  - id: pro
    name: Pro
    type: subscription
    recurring_interval: month
    grants:
      - entitlement: monthly_credits
        amount: 60
        reset: period
        rollover: {max: 30}
      - entitlement: daily_credits
        amount: 8
        reset: day
        rollover: {min: 3, max: 3}
      - entitlement: export_hd
  - id: daily_boost
    name: Daily boost
    type: add_on
    grants:
      - entitlement: daily_credits
        amount: 7
        reset: day
        rollover: {min: 5, max: 7}
        expires_after: P10D
        priority: -1
  - id: weekly_bonus
    name: Weekly bonus
    type: add_on
    grants:
      - entitlement: bonus_credits
        amount: 15
        reset: week
        rollover: {max: 30}
  - id: quarter_pack
    name: Quarter pack
    type: one_time
    grants:
      - entitlement: monthly_credits
        amount: 40
        reset: month
        rollover: {min: 10, max: 25}
        expires_after: P3M
        priority: 1
  - id: pack_50
    name: 50 credits
    type: one_time
    grants:
      - entitlement: purchased_credits
        amount: 50
        expires_after: P30D
  - id: welcome
    name: Welcome bonus
    type: one_time
    grants:
      - entitlement: bonus_credits
        amount: 10
        priority: 1
      - entitlement: export_hd
        expires_after: P1D
"""

# --- the model's own copy of the catalog -------------------------------------------

METERED = ("monthly_credits", "daily_credits", "bonus_credits", "purchased_credits")
BOOLEAN = ("export_hd",)
USAGE_KEYS = {
    "credits": ("daily_credits", "monthly_credits", "bonus_credits", "purchased_credits"),
    "spare": ("purchased_credits", "bonus_credits"),
}
PRICES = {  # action -> (usage key, units per action)
    "image_generation": ("credits", 5),
    "export_4k": ("credits", 20),
    "spare_action": ("spare", 3),
    "huge_job": ("spare", 2**50),
}


@dataclass(frozen=True)
class Spec:
    """One grant of a product, as the model reads the catalog above."""

    entitlement: str
    amount: int = 0
    reset: str | None = None
    """day, week or month (a subscription's `period` is its interval: month here)."""
    rollover: tuple[int, int] = (0, 0)
    expires_after: tuple[str, int] | None = None
    """(months | days, count)."""
    priority: int = 0


PRODUCTS: dict[str, tuple[Spec, ...]] = {
    "free": (Spec("monthly_credits", 25, "month"), Spec("export_hd")),
    "pro": (
        Spec("monthly_credits", 60, "month", (0, 30)),
        Spec("daily_credits", 8, "day", (3, 3)),
        Spec("export_hd"),
    ),
    "daily_boost": (Spec("daily_credits", 7, "day", (5, 7), ("days", 10), priority=-1),),
    "weekly_bonus": (Spec("bonus_credits", 15, "week", (0, 30)),),
    "quarter_pack": (Spec("monthly_credits", 40, "month", (10, 25), ("months", 3), priority=1),),
    "pack_50": (Spec("purchased_credits", 50, expires_after=("days", 30)),),
    "welcome": (
        Spec("bonus_credits", 10, priority=1),
        Spec("export_hd", expires_after=("days", 1)),
    ),
}
DEFAULT_PRODUCTS = ("free",)

FAR_FUTURE = datetime.max.replace(tzinfo=UTC)

# --- the model ---------------------------------------------------------------------


@dataclass(eq=False)
class ModelGrant:
    customer: str
    entitlement: str
    source_id: str | None
    amount: int
    balance: int
    priority: int
    created_at: datetime
    seq: int
    """Creation order; grant ids sort by creation time, so this is the id tie-break."""
    expires_at: datetime | None
    reset_unit: str | None = None
    rollover: tuple[int, int] = (0, 0)
    period: int = 0
    expired: bool = False
    id: str | None = None

    @property
    def metered(self) -> bool:
        return self.entitlement in METERED

    def next_reset(self) -> datetime | None:
        if self.reset_unit is None:
            return None
        return boundary(self.created_at, self.reset_unit, self.period + 1)

    def settle(self, now: datetime) -> None:
        """Every reset whose boundary passed before the grant expired, then expiry."""
        if self.expired:
            return
        while (at := self.next_reset()) is not None and at <= now:
            if self.expires_at is not None and at >= self.expires_at:
                break
            self.period += 1
            low, high = self.rollover
            self.balance = self.amount + min(high, max(self.balance, low))
        if self.expires_at is not None and self.expires_at <= now:
            self.balance = 0
            self.expired = True


@dataclass
class ModelCustomer:
    name: str
    id: str | None = None
    sources: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What a track (or check) must answer, computed by the model."""

    error: str | None
    available: int
    draws: list[tuple[ModelGrant, int]]

    @property
    def success(self) -> bool:
        return self.error is None


@dataclass(eq=False)
class ModelEvent:
    id: str
    customer: str
    tracked_id: str
    value: int
    source_id: str | None
    consumed: int
    draws: list[tuple[ModelGrant, int]]
    result: revenipe.TrackResult
    reversed: int = 0
    reversed_into: dict[ModelGrant, int] = field(default_factory=dict)
    """Units given back so far, per grant that paid."""


# --- strategies --------------------------------------------------------------------

CUSTOMERS = st.sampled_from(["alice", "bob"])
TRACKED_IDS = st.sampled_from(
    [
        "credits",
        "credits",
        "spare",
        *METERED,
        "monthly_credits",
        "export_hd",
        "no_such_thing",
        *PRICES,
        "image_generation",
    ]
)
SMALL_VALUES = st.integers(1, 30)
VALUES = st.one_of(  # mostly what fits, sometimes far more than any balance
    SMALL_VALUES,
    SMALL_VALUES,
    SMALL_VALUES,
    st.integers(31, 300),
    st.sampled_from([2**31, MAX_AMOUNT]),
)
TRACK_KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))
REVERSAL_KEYS = st.one_of(st.none(), st.sampled_from(["r1", "r2"]))
PRIORITIES = st.one_of(st.none(), st.integers(-2, 2))
EXPIRY_OFFSETS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 3600, 86_400, 7 * 86_400, 31 * 86_400]),
    st.integers(1, 100 * 86_400),
)
STEPS = st.one_of(
    st.integers(1, 999_999).map(lambda n: timedelta(microseconds=n)),
    st.integers(1, 59).map(lambda n: timedelta(seconds=n)),
    st.integers(1, 59).map(lambda n: timedelta(minutes=n)),
    st.integers(1, 47).map(lambda n: timedelta(hours=n)),
    st.integers(1, 40).map(lambda n: timedelta(days=n)),
)
STARTS = st.sampled_from(
    [
        datetime(2026, 1, 31, 12, 0, tzinfo=UTC),  # monthly anchors on the 31st
        datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC),  # leap day, a second to midnight
        datetime(2026, 3, 30, 0, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 0, tzinfo=UTC),  # year end
    ]
)


def _sort_key(item: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in item)


class StatefulModel(RuleBasedStateMachine):
    """Real storage vs. the model; the subclass made per test sets `backend` and `clock`."""

    backend: ClassVar[revenipe.Backend]
    clock: ClassVar[Clock]
    catalog: ClassVar[revenipe.Catalog] = revenipe.load_catalog(CATALOG)

    def __init__(self) -> None:
        super().__init__()
        self.clock.now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
        created = self.backend.create_app("stateful model", self.catalog)
        self.app_id = created.app.id
        self.app = self.backend.app(self.app_id)
        self.customers: dict[str, ModelCustomer] = {}
        self.grants: list[ModelGrant] = []
        self.grants_by_id: dict[str, ModelGrant] = {}
        self.events: list[ModelEvent] = []
        self.track_keys: dict[tuple[str, str], ModelEvent] = {}
        self.reversal_keys: dict[tuple[str, str], tuple[str, int]] = {}
        self.seq = 0

    # -- model helpers ---------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now

    def move_clock(self, moment: datetime) -> None:
        assert moment > self.now
        self.clock.now = moment
        for grant in self.grants:
            grant.settle(moment)

    def bind(self, grant: ModelGrant, grant_id: str) -> None:
        """Learn (or confirm) the real id of a model grant."""
        if grant.id is None:
            assert grant_id not in self.grants_by_id, f"{grant_id} already names another grant"
            grant.id = grant_id
            self.grants_by_id[grant_id] = grant
        assert grant.id == grant_id, f"expected grant {grant.id}, got {grant_id}"

    def add_grants(
        self,
        customer: str,
        source_id: str | None,
        specs: tuple[Spec, ...],
        *,
        expires_at: datetime | None = None,
        priority: int | None = None,
    ) -> list[ModelGrant]:
        added = []
        for spec in specs:
            expiry = None
            if spec.expires_after is not None:
                unit, count = spec.expires_after
                expiry = (
                    months_later(self.now, count)
                    if unit == "months"
                    else self.now + timedelta(days=count)
                )
            if expires_at is not None:
                expiry = expires_at if expiry is None else min(expiry, expires_at)
            self.seq += 1
            grant = ModelGrant(
                customer=customer,
                entitlement=spec.entitlement,
                source_id=source_id,
                amount=spec.amount,
                balance=spec.amount,
                priority=spec.priority if priority is None else priority,
                created_at=self.now,
                seq=self.seq,
                expires_at=expiry,
                reset_unit=spec.reset,
                rollover=spec.rollover,
            )
            grant.settle(self.now)  # a grant born expired is written off at once
            self.grants.append(grant)
            added.append(grant)
        return added

    def ensure_customer(self, name: str) -> bool:
        """Create the customer in the model (with the default products) if new."""
        if name in self.customers:
            return False
        self.customers[name] = ModelCustomer(name)
        for product in DEFAULT_PRODUCTS:
            self.add_grants(name, None, PRODUCTS[product])
        return True

    def learn_new_customer(self, name: str) -> None:
        """The ids the implementation gave a customer the model just created."""
        customer = self.customers[name]
        state = self.app.state(name)
        customer.id = state.customer.id
        defaults = [s.source for s in state.sources if s.source.kind == "default"]
        assert [s.product_id for s in defaults] == list(DEFAULT_PRODUCTS)
        assert all(s.created_at == state.customer.created_at for s in defaults)
        for source in defaults:
            customer.sources.append(source.id)
            for grant in self.grants:
                if grant.customer == name and grant.source_id is None:
                    grant.source_id = source.id

    def plan(self, customer: str, tracked_id: str, value: int, source_id: str | None) -> Plan:
        if tracked_id in BOOLEAN:
            return Plan("not_metered", 0, [])
        if tracked_id in METERED:
            entitlements: tuple[str, ...] = (tracked_id,)
        elif tracked_id in USAGE_KEYS:
            entitlements = USAGE_KEYS[tracked_id]
        else:
            return Plan("unknown_entitlement", 0, [])
        if source_id is not None and source_id not in self.customers[customer].sources:
            return Plan("unknown_access_source", 0, [])
        candidates = [
            g
            for g in self.grants
            if g.customer == customer
            and g.entitlement in entitlements
            and (source_id is None or g.source_id == source_id)
        ]
        usable = [g for g in candidates if not g.expired]
        if not usable:
            return Plan("access_expired" if candidates else "no_access", 0, [])
        usable.sort(
            key=lambda g: (
                entitlements.index(g.entitlement),
                g.priority,
                g.expires_at or FAR_FUTURE,
                g.expires_at is None,
                g.created_at,
                g.seq,
            )
        )
        available = sum(g.balance for g in usable)
        if available < value:
            return Plan("insufficient_balance", available, [])
        draws = []
        left = value
        for grant in usable:
            take = min(left, grant.balance)
            if take:
                draws.append((grant, take))
                left -= take
        return Plan(None, available, draws)

    def sources(self) -> list[str]:
        return [s for c in self.customers.values() for s in c.sources]

    # -- rules: granting ------------------------------------------------------------

    @initialize(start=STARTS, product=st.sampled_from(sorted(PRODUCTS)))
    def start(self, start: datetime, product: str) -> None:
        self.clock.now = start
        self.grant_product("alice", product, None, None)

    @rule(
        customer=CUSTOMERS,
        entitlement=st.sampled_from([*METERED, *BOOLEAN]),
        amount=st.one_of(st.integers(1, 40), st.just(MAX_AMOUNT)),
        expiry_offset=EXPIRY_OFFSETS,
        priority=PRIORITIES,
    )
    def grant_entitlement(
        self,
        customer: str,
        entitlement: str,
        amount: int,
        expiry_offset: int | None,
        priority: int | None,
    ) -> None:
        is_new = self.ensure_customer(customer)
        expires_at = None if expiry_offset is None else self.now + timedelta(seconds=expiry_offset)
        metered = entitlement in METERED
        granted = self.app.grant_entitlement(
            customer,
            entitlement,
            amount if metered else None,
            expires_at=expires_at,
            priority=priority,
        )
        if is_new:
            self.learn_new_customer(customer)
        assert granted.customer_id == self.customers[customer].id
        self.customers[customer].sources.append(granted.access_source_id)
        spec = Spec(entitlement, amount if metered else 0, priority=priority or 0)
        (grant,) = self.add_grants(
            customer, granted.access_source_id, (spec,), expires_at=expires_at
        )
        assert len(granted.grant_ids) == 1
        self.bind(grant, granted.grant_ids[0])

    @rule(
        customer=CUSTOMERS,
        product=st.sampled_from(sorted(PRODUCTS)),
        expiry_offset=EXPIRY_OFFSETS,
        priority=PRIORITIES,
    )
    def grant_product(
        self, customer: str, product: str, expiry_offset: int | None, priority: int | None
    ) -> None:
        is_new = self.ensure_customer(customer)
        expires_at = None if expiry_offset is None else self.now + timedelta(seconds=expiry_offset)
        granted = self.app.grant_product(
            customer, product, expires_at=expires_at, priority=priority
        )
        if is_new:
            self.learn_new_customer(customer)
        assert granted.customer_id == self.customers[customer].id
        self.customers[customer].sources.append(granted.access_source_id)
        added = self.add_grants(
            customer,
            granted.access_source_id,
            PRODUCTS[product],
            expires_at=expires_at,
            priority=priority,
        )
        assert len(granted.grant_ids) == len(added)
        for grant, grant_id in zip(added, granted.grant_ids, strict=True):
            self.bind(grant, grant_id)

    # -- rules: track, check ----------------------------------------------------------

    def draw_source(self, data: st.DataObject) -> str | None:
        sources = self.sources()
        if not sources:
            return None
        # Mostly no source; when one, it may be another customer's (unknown to this one).
        return data.draw(
            st.one_of(st.none(), st.none(), st.none(), st.sampled_from(sources)), label="source"
        )

    @rule(data=st.data(), customer=CUSTOMERS, tracked_id=TRACKED_IDS, value=VALUES, key=TRACK_KEYS)
    def track(
        self, data: st.DataObject, customer: str, tracked_id: str, value: int, key: str | None
    ) -> None:
        self.do_track(customer, tracked_id, value, self.draw_source(data), key)

    # Plain tracks that fit, more often than the rule above draws them.
    @rule(customer=CUSTOMERS, value=SMALL_VALUES, key=TRACK_KEYS)
    def track_credits(self, customer: str, value: int, key: str | None) -> None:
        self.do_track(customer, "credits", value, None, key)

    @rule(data=st.data(), customer=CUSTOMERS, value=SMALL_VALUES)
    def track_entitlement(self, data: st.DataObject, customer: str, value: int) -> None:
        held = sorted({g.entitlement for g in self.grants if g.customer == customer and g.metered})
        entitlement = data.draw(st.sampled_from(held or METERED), label="entitlement")
        self.do_track(customer, entitlement, value, None, None)

    @precondition(lambda self: self.customers)
    @rule(
        data=st.data(),
        tracked_id=st.sampled_from(["credits", "spare", *METERED]),
        difference=st.sampled_from([-1, 0, 0, 1]),
    )
    def track_whole_balance(self, data: st.DataObject, tracked_id: str, difference: int) -> None:
        """All or nothing at the edge: the whole balance, one less, or one more."""
        customer = data.draw(st.sampled_from(sorted(self.customers)), label="customer")
        available = self.plan(customer, tracked_id, MAX_AMOUNT, None).available
        value = min(MAX_AMOUNT, max(1, available + difference))
        self.do_track(customer, tracked_id, value, None, None)

    @precondition(lambda self: self.customers)
    @rule(
        data=st.data(),
        action=st.sampled_from(sorted(PRICES)),
        difference=st.sampled_from([-1, 0, 0, 1]),
        key=TRACK_KEYS,
    )
    def track_action_at_the_edge(
        self, data: st.DataObject, action: str, difference: int, key: str | None
    ) -> None:
        """A priced action at the edge of the key's balance: as many as fit, one more."""
        customer = data.draw(st.sampled_from(sorted(self.customers)), label="customer")
        usage_key, price = PRICES[action]
        available = self.plan(customer, usage_key, MAX_AMOUNT, None).available
        value = min(MAX_AMOUNT, max(1, available // price + difference))
        self.do_track(customer, action, value, self.draw_source(data), key)

    @precondition(lambda self: any(g.metered and not g.expired for g in self.grants))
    @rule(
        data=st.data(),
        via_key=st.booleans(),
        difference=st.sampled_from([-1, 0, 0, 1]),
        small_value=st.one_of(st.none(), SMALL_VALUES),
    )
    def track_from_source(
        self, data: st.DataObject, via_key: bool, difference: int, small_value: int | None
    ) -> None:
        """Restricted to one access source: a small value, or its whole balance (+-1)."""
        live = [g for g in self.grants if g.metered and not g.expired]
        grant = data.draw(st.sampled_from(live), label="grant")
        tracked_id = "credits" if via_key else grant.entitlement
        value = small_value
        if value is None:
            available = self.plan(grant.customer, tracked_id, MAX_AMOUNT, grant.source_id).available
            value = min(MAX_AMOUNT, max(1, available + difference))
        self.do_track(grant.customer, tracked_id, value, grant.source_id, None)

    @precondition(lambda self: self.track_keys)
    @rule(data=st.data(), change=st.sampled_from(["none", "value", "id", "source"]))
    def replay_idempotency_key(self, data: st.DataObject, change: str) -> None:
        customer, key = data.draw(st.sampled_from(sorted(self.track_keys)), label="key")
        event = self.track_keys[customer, key]
        tracked_id, value, source_id = event.tracked_id, event.value, event.source_id
        if change == "value":
            value = value + 1 if value < MAX_AMOUNT else 1
        elif change == "id":
            tracked_id = "spare" if tracked_id != "spare" else "credits"
        elif change == "source":
            sources = [s for s in [None, *self.sources()] if s != source_id]
            source_id = data.draw(st.sampled_from(sources), label="other source")
        self.do_track(customer, tracked_id, value, source_id, key)

    def do_track(
        self,
        customer: str,
        tracked_id: str,
        value: int,
        source_id: str | None,
        key: str | None,
        send: Callable[[], revenipe.TrackResult] | None = None,
    ) -> None:
        """One track, checked against the model; `send` is how it reaches the storage
        (default: `App.track`; a batch item's answer, already known, otherwise)."""

        def call() -> revenipe.TrackResult:
            if send is not None:
                return send()
            return self.app.track(
                customer, tracked_id, value, access_source_id=source_id, idempotency_key=key
            )

        previous = self.track_keys.get((customer, key)) if key is not None else None
        priced = PRICES.get(tracked_id)
        if previous is None and priced is not None and value * priced[1] > MAX_AMOUNT:
            # Bad input: an error, nothing recorded, not even a new customer.
            with pytest.raises(RevenipeError) as raised:
                call()
            assert raised.value.code is ErrorCode.INVALID_VALUE
            return
        is_new = self.ensure_customer(customer)
        if previous is not None:
            body = (previous.tracked_id, previous.value, previous.source_id)
            if body == (tracked_id, value, source_id):
                replayed = call()
                assert replayed == dataclasses.replace(previous.result, replayed=True)
            else:
                with pytest.raises(RevenipeError) as raised:
                    call()
                assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
            return
        # A priced action is its usage key's track for value x price, in the key's units.
        pays, units = (priced[0], value * priced[1]) if priced else (tracked_id, value)
        plan = self.plan(customer, pays, units, source_id)
        result = call()
        if is_new:
            self.learn_new_customer(customer)
        remaining = plan.available - units if plan.success else plan.available
        expected = revenipe.TrackResult(
            success=plan.success,
            requested=units,
            consumed=units if plan.success else 0,
            remaining=remaining,
            entitlement_id=tracked_id,
            access_source_id=source_id,
            error=plan.error,
            usage_event_id=result.usage_event_id,
            customer_id=self.customers[customer].id,
            action=tracked_id if priced else None,
            unit_price=priced[1] if priced else None,
        )
        assert result == expected
        assert result.usage_event_id is not None
        for grant, amount in plan.draws:
            grant.balance -= amount
        event = ModelEvent(
            id=result.usage_event_id,
            customer=customer,
            tracked_id=tracked_id,
            value=value,
            source_id=source_id,
            consumed=result.consumed,
            draws=plan.draws,
            result=result,
        )
        self.events.append(event)
        if key is not None:
            self.track_keys[customer, key] = event

    @rule(
        items=st.lists(
            st.tuples(CUSTOMERS, TRACKED_IDS, VALUES, st.sampled_from(["k1", "k2", "k3"])),
            min_size=1,
            max_size=6,
        )
    )
    def track_batch(self, items: list[tuple[str, str, int, str]]) -> None:
        """A batch: each item is checked as the single track it stands for, in order
        (items of different customers are independent, so the model's order is fine)."""
        outcomes = self.app.track_batch([revenipe.BatchItem(*item) for item in items])
        assert len(outcomes) == len(items)
        for (customer, tracked_id, value, key), outcome in zip(items, outcomes, strict=True):

            def answer(outcome: revenipe.BatchOutcome = outcome) -> revenipe.TrackResult:
                if outcome.error is not None:
                    raise outcome.error
                assert outcome.result is not None
                return outcome.result

            self.do_track(customer, tracked_id, value, None, key, send=answer)

    @rule(data=st.data(), customer=CUSTOMERS, tracked_id=TRACKED_IDS, value=VALUES)
    def check(self, data: st.DataObject, customer: str, tracked_id: str, value: int) -> None:
        source_id = self.draw_source(data)
        if customer not in self.customers:
            with pytest.raises(RevenipeError) as raised:
                self.app.check(customer, tracked_id, value, access_source_id=source_id)
            assert raised.value.code is ErrorCode.CUSTOMER_NOT_FOUND
            return
        priced = PRICES.get(tracked_id)
        if priced is not None and value * priced[1] > MAX_AMOUNT:
            with pytest.raises(RevenipeError) as raised:
                self.app.check(customer, tracked_id, value, access_source_id=source_id)
            assert raised.value.code is ErrorCode.INVALID_VALUE
            return
        pays, units = (priced[0], value * priced[1]) if priced else (tracked_id, value)
        plan = self.plan(customer, pays, units, source_id)
        result = self.app.check(customer, tracked_id, value, access_source_id=source_id)
        assert result.would_succeed is plan.success
        assert result.error == plan.error
        assert result.requested == units
        assert result.available == plan.available
        assert result.remaining_after == plan.available - (units if plan.success else 0)
        assert result.entitlement_id == tracked_id
        assert (result.action, result.unit_price) == (
            (tracked_id, priced[1]) if priced else (None, None)
        )
        assert result.access_source_id == source_id
        assert [(d.access_source_id, d.entitlement_id, d.amount) for d in result.draws] == [
            (g.source_id, g.entitlement, amount) for g, amount in plan.draws
        ]
        for draw, (grant, _) in zip(result.draws, plan.draws, strict=True):
            self.bind(grant, draw.grant_id)

    # -- rules: reversal ----------------------------------------------------------------

    @precondition(lambda self: self.events)
    @rule(
        data=st.data(),
        how=st.sampled_from(["all", "partial", "partial", "too_much", "unknown"]),
        key=REVERSAL_KEYS,
    )
    def reverse(self, data: st.DataObject, how: str, key: str | None) -> None:
        if how == "unknown":
            with pytest.raises(RevenipeError) as raised:
                self.app.reverse("use_does_not_exist", idempotency_key=key)
            assert raised.value.code is ErrorCode.USAGE_EVENT_NOT_FOUND
            return
        open_events = [e for e in self.events if e.consumed > e.reversed]
        paid_by_expired = [e for e in open_events if any(g.expired for g, _ in e.draws)]
        pools = [pool for pool in (self.events, open_events, paid_by_expired) if pool]
        event = data.draw(st.sampled_from(data.draw(st.sampled_from(pools))), label="event")
        reversible = event.consumed - event.reversed
        amount: int | None = None
        if how == "partial" and reversible > 1:
            amount = data.draw(st.integers(1, reversible - 1), label="amount")
        elif how == "too_much" and reversible < MAX_AMOUNT:
            too_much = st.integers(reversible + 1, min(MAX_AMOUNT, reversible + 100))
            amount = data.draw(too_much, label="amount")
        self.do_reverse(event, amount, key)

    def events_paid_by_expiring_grants(self) -> list[ModelEvent]:
        return [
            e
            for e in self.events
            if e.consumed > e.reversed
            and any(g.expires_at is not None and not g.expired for g, _ in e.draws)
        ]

    @precondition(lambda self: self.events_paid_by_expiring_grants())
    @rule(data=st.data(), seconds_after=st.sampled_from([0, 1, 86_400]), key=REVERSAL_KEYS)
    def reverse_after_expiry(
        self, data: st.DataObject, seconds_after: int, key: str | None
    ) -> None:
        """Let a grant that paid expire, then give back into it (and so write it off)."""
        event = data.draw(st.sampled_from(self.events_paid_by_expiring_grants()), label="event")
        expiring = [g for g, _ in event.draws if g.expires_at is not None and not g.expired]
        grant = data.draw(st.sampled_from(expiring), label="grant")
        assert grant.expires_at is not None
        self.move_clock(grant.expires_at + timedelta(seconds=seconds_after))
        self.do_reverse(event, None, key)

    def do_reverse(self, event: ModelEvent, amount: int | None, key: str | None) -> None:
        previous = self.reversal_keys.get((event.id, key)) if key is not None else None
        if previous is not None:
            reversal_id, previous_amount = previous
            if amount is not None and amount != previous_amount:
                with pytest.raises(RevenipeError) as raised:
                    self.app.reverse(event.id, amount, idempotency_key=key)
                assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
                return
            replayed = self.app.reverse(event.id, amount, idempotency_key=key)
            assert replayed == revenipe.ReversalResult(
                reversal_id, event.id, previous_amount, event.reversed, (), replayed=True
            )
            return
        reversible = event.consumed - event.reversed
        wanted = reversible if amount is None else amount
        if wanted > reversible:
            with pytest.raises(RevenipeError) as raised:
                self.app.reverse(event.id, amount, idempotency_key=key)
            assert raised.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
            return
        result = self.app.reverse(event.id, amount, idempotency_key=key)
        if wanted == 0:
            assert result == revenipe.ReversalResult(None, event.id, 0, event.reversed, ())
            return
        credits: list[tuple[ModelGrant, int]] = []
        left = wanted
        for grant, consumed in reversed(event.draws):
            take = min(left, consumed - event.reversed_into.get(grant, 0))
            if take > 0:
                credits.append((grant, take))
                left -= take
            if left == 0:
                break
        assert left == 0
        assert result.usage_event_id == event.id
        assert result.amount == wanted
        assert result.total_reversed == event.reversed + wanted
        assert not result.replayed
        assert result.reversal_id is not None
        assert [units for _, units in result.credits] == [units for _, units in credits]
        for (grant_id, units), (grant, _) in zip(result.credits, credits, strict=True):
            self.bind(grant, grant_id)
            event.reversed_into[grant] = event.reversed_into.get(grant, 0) + units
            if not grant.expired:  # an expired grant writes the credit off at once
                grant.balance += units
        event.reversed += wanted
        if key is not None:
            self.reversal_keys[event.id, key] = (result.reversal_id, wanted)

    @precondition(lambda self: self.reversal_keys)
    @rule(data=st.data(), change=st.sampled_from(["same", "none", "other"]))
    def replay_reversal_key(self, data: st.DataObject, change: str) -> None:
        event_id, key = data.draw(st.sampled_from(sorted(self.reversal_keys)), label="key")
        (event,) = [e for e in self.events if e.id == event_id]
        amount: int | None = self.reversal_keys[event_id, key][1]
        if change == "none":
            amount = None
        elif change == "other":
            assert amount is not None
            amount = amount + 1 if amount < MAX_AMOUNT else amount - 1
        self.do_reverse(event, amount, key)

    # -- rules: time ----------------------------------------------------------------

    @rule(step=STEPS)
    def advance(self, step: timedelta) -> None:
        self.move_clock(self.now + step)

    @rule(months=st.integers(1, 14))
    def advance_months(self, months: int) -> None:
        self.move_clock(months_later(self.now, months))

    @precondition(lambda self: any(not g.expired for g in self.grants))
    @rule(data=st.data(), nudge=st.sampled_from([-1, 0, 0, 1]))
    def advance_to_boundary(self, data: st.DataObject, nudge: int) -> None:
        """Onto (or a second either side of) a coming reset or expiry."""
        moments: set[datetime] = set()
        for grant in self.grants:
            if grant.expired:
                continue
            if grant.expires_at is not None:
                moments.add(grant.expires_at)
            reset_at = grant.next_reset()
            if reset_at is not None:
                moments.add(reset_at)
        moments = {m for m in moments if m > self.now}
        if not moments:
            return
        moment = data.draw(st.sampled_from(sorted(moments)[:6]), label="boundary")
        target = moment + timedelta(seconds=nudge)
        self.move_clock(target if target > self.now else moment)

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        for name, customer in self.customers.items():
            state = self.app.state(name)
            assert state.customer.id == customer.id
            assert state.as_of == self.now
            actual = sorted(
                (
                    (e.entitlement_id, e.access_source_id, e.type, e.remaining, e.expires_at)
                    for e in state.entitlements
                ),
                key=_sort_key,
            )
            expected = sorted(
                (
                    (
                        g.entitlement,
                        g.source_id,
                        "metered" if g.metered else "boolean",
                        g.balance if g.metered else 1,
                        g.expires_at,
                    )
                    for g in self.grants
                    if g.customer == name and not g.expired
                ),
                key=_sort_key,
            )
            assert actual == expected, f"grants of {name} differ at {self.now}"
            assert all(e.remaining >= 0 for e in state.entitlements)
            per_entitlement_actual = {e: 0 for e in METERED}
            for e in state.entitlements:
                if e.type == "metered":
                    per_entitlement_actual[e.entitlement_id] += e.remaining
            per_entitlement = {
                e: sum(
                    g.balance
                    for g in self.grants
                    if g.customer == name and g.entitlement == e and not g.expired
                )
                for e in METERED
            }
            assert per_entitlement_actual == per_entitlement
            assert {k.key_id: k.remaining for k in state.usage_keys} == {
                key: sum(per_entitlement[e] for e in entitlements)
                for key, entitlements in USAGE_KEYS.items()
            }
        for grant in self.grants:
            assert grant.balance >= 0
        report = self.backend.verify(self.app_id)
        assert report.ok, "\n".join(report.problems)


def test_storage_matches_the_model(database_url: str) -> None:
    clock = Clock()
    with revenipe.open(database_url, clock=clock) as backend:
        machine = type(
            "StatefulModelOn" + database_url.split(":", 1)[0].capitalize(),
            (StatefulModel,),
            {"backend": backend, "clock": clock},
        )
        run_state_machine_as_test(machine, settings=SETTINGS)
