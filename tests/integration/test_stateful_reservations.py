"""The stateful model test, with reservations: holds, settles (less, more, 0), releases,
replays and expiries among the tracks, grants, reversals and clock moves of
`test_stateful_model`, against a model written here from docs/concepts/reservations.md
(it imports nothing from the engine).

The rules the model adds: a hold draws like a track and takes the units out of the
grants' balances; closing gives each held grant its part back unless the grant's period
has ended since (it reset, expired), in which case the unconsumed rest is gone; a settle
consumes from the hold first (first held, first consumed), then draws the difference
like a track or reports a shortfall; a hold expires at its `expires_at`, before any
later reset sees the grant; the first close wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

import revenipe
from integration.test_stateful_model import (
    CUSTOMERS,
    MAX_AMOUNT,
    METERED,
    SETTINGS,
    SMALL_VALUES,
    TRACKED_IDS,
    USAGE_KEYS,
    VALUES,
    ModelGrant,
    StatefulModel,
)
from revenipe import RefusalCode

from support import Clock

TTLS = st.sampled_from([1, 60, 600, 3600, 86_400])


@dataclass(eq=False)
class ModelHold:
    id: str
    customer: str
    tracked_id: str
    held: int
    expires_at: datetime
    seq: int
    parts: list[tuple[ModelGrant, int, int]]
    """(grant, units, the grant's period when held), in the order held."""
    ttl: int = 0
    state: str = "held"
    answer: revenipe.CloseResult | None = None
    key: str | None = None
    hold_answer: revenipe.HoldResult | None = None
    consumed: int = 0
    released: int = 0
    shortfall: int = 0


class ReservationModel(StatefulModel):
    def __init__(self) -> None:
        super().__init__()
        self.holds: list[ModelHold] = []
        self.hold_keys: dict[tuple[str, str], ModelHold] = {}

    # -- the model ----------------------------------------------------------------------

    def entitlements_of(self, tracked_id: str) -> tuple[str, ...]:
        return (tracked_id,) if tracked_id in METERED else USAGE_KEYS[tracked_id]

    def remaining_of(self, customer: str, tracked_id: str) -> int:
        entitlements = self.entitlements_of(tracked_id)
        return sum(
            g.balance
            for g in self.grants
            if g.customer == customer and g.entitlement in entitlements and not g.expired
        )

    def close_in_model(self, hold: ModelHold, value: int) -> tuple[int, int, int]:
        """(consumed, released, shortfall) of closing `hold` now (grants settled to now)."""
        from_hold = min(value, hold.held)
        left = from_hold
        for grant, units, period in hold.parts:
            take = min(units, left)
            left -= take
            if not grant.expired and grant.period == period:
                grant.balance += units - take
        beyond = value - from_hold
        shortfall = 0
        if beyond:
            plan = self.plan(hold.customer, hold.tracked_id, beyond, None)
            if plan.success:
                for grant, amount in plan.draws:
                    grant.balance -= amount
            else:
                shortfall = beyond
        return value - shortfall, hold.held - from_hold, shortfall

    def move_clock(self, moment: datetime) -> None:
        # Each hold expires at its own instant, before the resets that follow it.
        while True:
            due = [h for h in self.holds if h.state == "held" and h.expires_at <= moment]
            if not due:
                break
            first = min(due, key=lambda h: (h.expires_at, h.seq))
            for grant in self.grants:
                grant.settle(first.expires_at)
            first.consumed, first.released, first.shortfall = self.close_in_model(first, 0)
            first.state = "expired"
        super().move_clock(moment)

    # -- rules ----------------------------------------------------------------------------

    @rule(
        customer=CUSTOMERS,
        tracked_id=TRACKED_IDS,
        value=VALUES,
        ttl=TTLS,
        key=st.one_of(st.none(), st.sampled_from(["h1", "h2"])),
    )
    def hold(self, customer: str, tracked_id: str, value: int, ttl: int, key: str | None) -> None:
        is_new = self.ensure_customer(customer)
        previous = self.hold_keys.get((customer, key)) if key is not None else None
        if previous is not None:
            if (previous.tracked_id, previous.held, previous.ttl) == (tracked_id, value, ttl):
                replayed = self.app.reserve(
                    customer, tracked_id, value, ttl_seconds=ttl, idempotency_key=key
                )
                assert replayed.replayed and replayed.reservation_id == previous.id
                assert replayed.held == previous.held
                assert previous.hold_answer is not None
                assert replayed.remaining == previous.hold_answer.remaining
                return
            with pytest.raises(revenipe.RevenipeError) as raised:
                self.app.reserve(customer, tracked_id, value, ttl_seconds=ttl, idempotency_key=key)
            assert raised.value.code is revenipe.ErrorCode.IDEMPOTENCY_KEY_REUSED
            return
        plan = self.plan(customer, tracked_id, value, None)
        result = self.app.reserve(customer, tracked_id, value, ttl_seconds=ttl, idempotency_key=key)
        if is_new:
            self.learn_new_customer(customer)
        assert (result.success, result.error) == (plan.success, plan.error)
        assert result.customer_id == self.customers[customer].id
        if not plan.success:
            assert (result.held, result.remaining, result.reservation_id) == (
                0,
                plan.available,
                None,
            )
            return
        assert result.held == value and result.remaining == plan.available - value
        assert result.expires_at == self.now + timedelta(seconds=ttl)
        assert result.reservation_id is not None
        for grant, amount in plan.draws:
            grant.balance -= amount
        self.seq += 1
        hold = ModelHold(
            id=result.reservation_id,
            customer=customer,
            tracked_id=tracked_id,
            held=value,
            expires_at=result.expires_at,
            seq=self.seq,
            parts=[(grant, amount, grant.period) for grant, amount in plan.draws],
            ttl=ttl,
            key=key,
            hold_answer=result,
        )
        self.holds.append(hold)
        if key is not None:
            self.hold_keys[customer, key] = hold

    @rule(customer=CUSTOMERS, tracked_id=st.sampled_from(["credits", *METERED]), value=SMALL_VALUES)
    def hold_for_a_day(self, customer: str, tracked_id: str, value: int) -> None:
        """Holds that fit and last long enough for resets and expiries to meet them."""
        self.hold(customer, tracked_id, value, 86_400, None)

    @rule(customer=CUSTOMERS, value=SMALL_VALUES)
    def hold_credits(self, customer: str, value: int) -> None:
        self.hold(customer, "credits", value, 600, None)

    @precondition(lambda self: any(h.state == "held" for h in self.holds))
    @rule(data=st.data(), how=st.sampled_from(["less", "exact", "more", "far_more", "zero"]))
    def settle_open(self, data: st.DataObject, how: str) -> None:
        """A settle of a hold still open (settle also picks closed ones)."""
        open_holds = [h for h in self.holds if h.state == "held"]
        self.settle_one(data, data.draw(st.sampled_from(open_holds), label="open"), how)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), how=st.sampled_from(["less", "exact", "more", "far_more", "zero"]))
    def settle(self, data: st.DataObject, how: str) -> None:
        self.settle_one(data, data.draw(st.sampled_from(self.holds), label="hold"), how)

    def settle_one(self, data: st.DataObject, hold: ModelHold, how: str) -> None:
        value = {
            "less": max(0, hold.held - data.draw(st.integers(1, 30), label="less")),
            "exact": hold.held,
            "more": hold.held + data.draw(st.integers(1, 40), label="more"),
            "far_more": hold.held + 10**6,
            "zero": 0,
        }[how]
        self.close(hold, value)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.close(data.draw(st.sampled_from(self.holds), label="hold"), None)

    def close(self, hold: ModelHold, value: int | None) -> None:
        if value is not None and value > MAX_AMOUNT:
            # Beyond any amount: bad input, whatever the reservation's state.
            with pytest.raises(revenipe.RevenipeError) as raised:
                self.app.settle(hold.id, value)
            assert raised.value.code is revenipe.ErrorCode.INVALID_VALUE
            return
        settling = value is not None and value > 0
        result = self.app.release(hold.id) if value is None else self.app.settle(hold.id, value)
        if hold.state != "held":
            if settling == (hold.state == "settled"):
                assert result.replayed and result.success
                assert (result.consumed, result.released, result.shortfall) == (
                    hold.consumed,
                    hold.released,
                    hold.shortfall,
                )
            else:
                assert not result.success
                assert result.error == RefusalCode.RESERVATION_CLOSED
                assert (result.consumed, result.released) == (0, 0)
                assert result.remaining == self.remaining_of(hold.customer, hold.tracked_id)
            return
        consumed, released, shortfall = self.close_in_model(hold, value or 0)
        hold.consumed, hold.released, hold.shortfall = consumed, released, shortfall
        hold.state = "settled" if settling else "released"
        assert result.success and not result.replayed
        assert result.state == hold.state
        assert (result.consumed, result.released, result.shortfall) == (
            consumed,
            released,
            shortfall,
        )
        assert result.remaining == self.remaining_of(hold.customer, hold.tracked_id)
        assert (result.usage_event_id is None) == (consumed == 0)

    @precondition(lambda self: any(h.state == "held" for h in self.holds))
    @rule(data=st.data(), nudge=st.sampled_from([-1, 0, 1]))
    def advance_to_an_expiry(self, data: st.DataObject, nudge: int) -> None:
        moments = sorted(h.expires_at for h in self.holds if h.state == "held")
        moment = data.draw(st.sampled_from(moments[:4]), label="expiry")
        target = moment + timedelta(microseconds=nudge)
        if target > self.now:
            self.move_clock(target)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def holds_match_the_model(self) -> None:
        for hold in self.holds:
            row = self.app.reservation(hold.id)
            assert row.state == hold.state, (hold.id, row.state, hold.state, self.now)
            assert (row.held, row.consumed, row.released, row.shortfall) == (
                hold.held,
                hold.consumed,
                hold.released,
                hold.shortfall,
            )


def test_storage_with_reservations_matches_the_model(database_url: str) -> None:
    clock = Clock()
    with revenipe.open(database_url, clock=clock) as backend:
        machine = type(
            "ReservationModelOn" + database_url.split(":", 1)[0].capitalize(),
            (ReservationModel,),
            {"backend": backend, "clock": clock},
        )
        run_state_machine_as_test(machine, settings=SETTINGS)
