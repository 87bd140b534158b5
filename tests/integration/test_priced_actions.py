"""Priced actions on real storage (SQLite and PostgreSQL): a track of an action draws
value x price from its usage key, answers the key's remaining, records the action and
its price, replays, checks and reverses like any track (docs/concepts/track.md#priced-actions)."""

from __future__ import annotations

import pytest

import revenipe
from revenipe import ErrorCode, RefusalCode, RevenipeError
from revenipe.storage import usage_events as usage_store

from support import DEMO_CATALOG, assert_verified

PRICED_CATALOG = DEMO_CATALOG.replace(
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n",
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"
    "    costs: {image_generation: 5, export_4k: 20, huge_job: 1125899906842624}\n",
)


@pytest.fixture
def priced(backend: revenipe.Backend) -> revenipe.App:
    assert "costs:" in PRICED_CATALOG
    created = backend.create_app("priced", revenipe.load_catalog(PRICED_CATALOG))
    return backend.app(created.app.id)


def credits(app: revenipe.App, customer: str) -> int:
    (key,) = [k for k in app.state(customer).usage_keys if k.key_id == "credits"]
    return key.remaining


def event(backend: revenipe.Backend, app: revenipe.App, event_id: str) -> usage_store.UsageEventRow:
    with backend.database.read() as conn:
        row = usage_store.get_usage_event(conn, app.app_id, event_id)
    assert row is not None
    return row


def test_an_action_draws_value_times_price(backend: revenipe.Backend, priced: revenipe.App) -> None:
    result = priced.track("alice", "image_generation", 2)
    assert result.success
    assert (result.requested, result.consumed, result.remaining) == (10, 10, 90)
    assert result.entitlement_id == "image_generation"
    assert (result.action, result.unit_price) == ("image_generation", 5)
    assert credits(priced, "alice") == 90
    assert result.usage_event_id is not None
    row = event(backend, priced, result.usage_event_id)
    assert (row.tracked_id, row.action, row.unit_price, row.requested, row.consumed) == (
        "credits",
        "image_generation",
        5,
        10,
        10,
    )
    # A plain track of the key records no action.
    plain = priced.track("alice", "credits", 3)
    assert (plain.action, plain.unit_price, plain.entitlement_id) == (None, None, "credits")
    assert plain.remaining == 87
    assert_verified(backend, priced.app_id)


def test_all_or_nothing_in_the_keys_units(backend: revenipe.Backend, priced: revenipe.App) -> None:
    assert priced.track("alice", "export_4k", 5).success  # 100
    assert credits(priced, "alice") == 0
    priced.grant_entitlement("alice", "bonus_credits", 39)
    refused = priced.track("alice", "export_4k", 2)
    assert not refused.success
    assert refused.error == RefusalCode.INSUFFICIENT_BALANCE
    assert (refused.requested, refused.consumed, refused.remaining) == (40, 0, 39)
    assert credits(priced, "alice") == 39
    assert priced.track("alice", "image_generation", 7).remaining == 4
    assert_verified(backend, priced.app_id)


def test_check_and_reversal(backend: revenipe.Backend, priced: revenipe.App) -> None:
    priced.grant_product("alice", "pack_50")
    plan = priced.check("alice", "export_4k", 6)
    assert plan.would_succeed
    assert (plan.requested, plan.available, plan.remaining_after) == (120, 150, 30)
    assert plan.entitlement_id == "export_4k"
    assert (plan.action, plan.unit_price) == ("export_4k", 20)
    assert [(d.entitlement_id, d.amount) for d in plan.draws] == [
        ("monthly_credits", 100),
        ("purchased_credits", 20),
    ]
    tracked = priced.track("alice", "export_4k", 6)
    assert tracked.success and tracked.remaining == 30
    assert tracked.usage_event_id is not None
    reversal = priced.reverse(tracked.usage_event_id)
    assert reversal.amount == 120  # everything drawn comes back
    assert credits(priced, "alice") == 150
    assert_verified(backend, priced.app_id)


def test_replay_compares_the_action_and_its_value(
    backend: revenipe.Backend, priced: revenipe.App
) -> None:
    first = priced.track("alice", "image_generation", 3, idempotency_key="k")
    again = priced.track("alice", "image_generation", 3, idempotency_key="k")
    assert again.replayed and again.usage_event_id == first.usage_event_id
    assert (again.requested, again.remaining, again.entitlement_id) == (15, 85, "image_generation")
    # The same units under another name, or another count, are another track.
    for tracked_id, value in (("credits", 15), ("image_generation", 15), ("export_4k", 3)):
        with pytest.raises(RevenipeError) as raised:
            priced.track("alice", tracked_id, value, idempotency_key="k")
        assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    # A price change later does not change what a replay answers.
    repriced = PRICED_CATALOG.replace("image_generation: 5", "image_generation: 7")
    priced.apply_catalog(revenipe.load_catalog(repriced))
    later = priced.track("alice", "image_generation", 3, idempotency_key="k")
    assert later.replayed and (later.requested, later.unit_price) == (15, 5)
    fresh = priced.track("alice", "image_generation", 3)
    assert (fresh.requested, fresh.unit_price, fresh.remaining) == (21, 7, 64)
    assert_verified(backend, priced.app_id)


@pytest.mark.parametrize("value", [8, 2**31, 2**53 - 1])
def test_overflow_is_bad_input_and_changes_nothing(
    backend: revenipe.Backend, priced: revenipe.App, value: int
) -> None:
    with pytest.raises(RevenipeError) as raised:
        priced.track("newcomer", "huge_job", value, idempotency_key="k")
    assert raised.value.code is ErrorCode.INVALID_VALUE
    # Not even the customer was created.
    with pytest.raises(RevenipeError) as missing:
        priced.state("newcomer")
    assert missing.value.code is ErrorCode.CUSTOMER_NOT_FOUND
    priced.login("alice")
    with pytest.raises(RevenipeError) as raised:
        priced.check("alice", "huge_job", value)
    assert raised.value.code is ErrorCode.INVALID_VALUE
    refused = priced.track("alice", "huge_job", 7)  # 7 x 2^50 fits the type, not the balance
    assert refused.error == RefusalCode.INSUFFICIENT_BALANCE
    assert credits(priced, "alice") == 100
    assert_verified(backend, priced.app_id)


@pytest.mark.parametrize("value", [0, -1, 2.0, "2", True, None, 2**53])
def test_bad_values_are_refused_as_for_any_track(priced: revenipe.App, value: object) -> None:
    with pytest.raises(RevenipeError) as raised:
        priced.track("alice", "image_generation", value)  # type: ignore[arg-type]
    assert raised.value.code is ErrorCode.INVALID_VALUE


def test_an_access_source_restricts_a_priced_action(priced: revenipe.App) -> None:
    pack = priced.grant_product("alice", "pack_50")
    result = priced.track("alice", "export_4k", 2, access_source_id=pack.access_source_id)
    assert result.success and result.remaining == 10
    assert result.access_source_id == pack.access_source_id
    refused = priced.track("alice", "export_4k", 1, access_source_id=pack.access_source_id)
    assert refused.error == RefusalCode.INSUFFICIENT_BALANCE and refused.remaining == 10
    assert credits(priced, "alice") == 110
