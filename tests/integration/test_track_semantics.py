"""Track semantics on real storage (SQLite and PostgreSQL): each rule can fail here."""

from datetime import timedelta

import pytest

import revenipe
from revenipe import ErrorCode, RefusalCode, RevenipeError
from revenipe.services import access
from revenipe.storage import customers as customer_store
from revenipe.storage import sources as source_store
from revenipe.wire.usage import track_result_to_wire

from support import Clock, assert_verified


def balances(app: revenipe.App, customer: str) -> dict[str, int]:
    state = app.state(customer)
    result: dict[str, int] = {}
    for e in state.entitlements:
        if e.type == "metered":
            result[e.entitlement_id] = result.get(e.entitlement_id, 0) + e.remaining
    for k in state.usage_keys:
        result[k.key_id] = k.remaining
    return result


def test_default_product_granted_on_creation(app: revenipe.App) -> None:
    result = app.track("alice", "monthly_credits", 1)
    assert result.success
    assert result.remaining == 99
    assert balances(app, "alice")["credits"] == 99


def test_usage_key_drains_in_declared_order(backend: revenipe.Backend, app: revenipe.App) -> None:
    app.grant_product("alice", "pack_50")  # purchased_credits 50
    app.grant_product("alice", "welcome")  # bonus_credits 10
    plan = app.check("alice", "credits", 105)
    assert [(d.entitlement_id, d.amount) for d in plan.draws] == [
        ("monthly_credits", 100),
        ("bonus_credits", 5),
    ]
    result = app.track("alice", "credits", 105)
    assert result.success and result.remaining == 55
    assert balances(app, "alice") == {
        "monthly_credits": 0,
        "bonus_credits": 5,
        "purchased_credits": 50,
        "credits": 55,
    }
    assert_verified(backend, app.app_id)


def test_all_or_nothing(backend: revenipe.Backend, app: revenipe.App) -> None:
    app.grant_product("alice", "welcome")
    before = balances(app, "alice")
    result = app.track("alice", "credits", 111)
    assert not result.success
    assert result.error == RefusalCode.INSUFFICIENT_BALANCE
    assert result.consumed == 0 and result.remaining == 110
    assert balances(app, "alice") == before
    assert_verified(backend, app.app_id)


def test_priority_and_expiry_order_within_entitlement(app: revenipe.App, clock: Clock) -> None:
    late = app.grant_entitlement(
        "bob", "purchased_credits", 5, expires_at=clock.now + timedelta(days=20)
    )
    soon = app.grant_entitlement(
        "bob", "purchased_credits", 5, expires_at=clock.now + timedelta(days=2)
    )
    first = app.grant_entitlement("bob", "purchased_credits", 5, priority=-1)
    plan = app.check("bob", "purchased_credits", 12)
    assert [d.access_source_id for d in plan.draws] == [
        first.access_source_id,
        soon.access_source_id,
        late.access_source_id,
    ]
    assert [d.amount for d in plan.draws] == [5, 5, 2]


def test_idempotent_replay(backend: revenipe.Backend, app: revenipe.App) -> None:
    first = app.track("alice", "credits", 7, idempotency_key="k1")
    again = app.track("alice", "credits", 7, idempotency_key="k1")
    assert again.replayed and track_result_to_wire(again) == track_result_to_wire(first)
    assert again.usage_event_id == first.usage_event_id
    assert balances(app, "alice")["credits"] == 93
    with pytest.raises(RevenipeError) as error:
        app.track("alice", "credits", 8, idempotency_key="k1")
    assert error.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    # Keys are scoped per customer: bob may use "k1" too.
    assert app.track("bob", "credits", 7, idempotency_key="k1").success
    assert_verified(backend, app.app_id)


def test_idempotency_key_kept_after_a_day(app: revenipe.App, clock: Clock) -> None:
    first = app.track("alice", "credits", 3, idempotency_key="late-retry")
    clock.advance(hours=25)
    again = app.track("alice", "credits", 3, idempotency_key="late-retry")
    assert again.replayed and again.usage_event_id == first.usage_event_id


def test_reversal_goes_back_into_the_grants_that_paid(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    app.grant_product("alice", "welcome")
    used = app.track("alice", "credits", 104)  # 100 monthly + 4 bonus
    assert used.usage_event_id
    partial = app.reverse(used.usage_event_id, 6, idempotency_key="r1")
    # The last grant drawn is refunded first: 4 to bonus, then 2 to monthly.
    assert partial.amount == 6
    assert balances(app, "alice") == {"monthly_credits": 2, "bonus_credits": 10, "credits": 12}
    replay = app.reverse(used.usage_event_id, 6, idempotency_key="r1")
    assert replay.replayed and balances(app, "alice")["credits"] == 12
    with pytest.raises(RevenipeError) as error:
        app.reverse(used.usage_event_id, 99)
    assert error.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
    rest = app.reverse(used.usage_event_id)
    assert rest.amount == 98 and rest.total_reversed == 104
    assert app.reverse(used.usage_event_id).amount == 0  # retrying a full reversal: no-op
    assert balances(app, "alice")["credits"] == 110
    assert_verified(backend, app.app_id)


def test_reversal_into_a_refunded_source_is_written_off(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    """A refund revokes what the pack had left; reversing usage the pack paid for gives
    the units back to the revoked grant, which writes them off: it holds 0 and the
    ledger still adds up (it once kept them, and verify reported it)."""
    app.grant_product("alice", "pack_50")
    used = app.track("alice", "purchased_credits", 20)
    assert used.success and used.usage_event_id
    with backend.context.db.write() as conn:
        customer = customer_store.find_customer(conn, app.app_id, external_id="alice")
        assert customer is not None
        (pack,) = [
            s for s in source_store.list_sources(conn, customer.id) if s.product_id == "pack_50"
        ]
        access.revoke_source(conn, pack, clock(), status="refunded")
    assert balances(app, "alice").get("purchased_credits", 0) == 0
    reversal = app.reverse(used.usage_event_id)
    assert reversal.amount == 20 and reversal.total_reversed == 20
    assert balances(app, "alice").get("purchased_credits", 0) == 0
    assert_verified(backend, app.app_id)


def test_lazy_monthly_reset_with_month_end_anchor(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    # The clock starts on 2026-01-31 12:00: the next period starts 2026-02-28 12:00.
    app.track("alice", "monthly_credits", 60)
    clock.advance(days=28, hours=-1)  # 2026-02-28 11:00: not yet
    assert balances(app, "alice")["monthly_credits"] == 40
    clock.advance(hours=1)  # 2026-02-28 12:00: the boundary (half-open)
    assert balances(app, "alice")["monthly_credits"] == 100
    clock.advance(days=400)  # a database left alone for a year
    result = app.track("alice", "monthly_credits", 1)
    assert result.success and result.remaining == 99
    assert_verified(backend, app.app_id)


def test_rollover_up_to_max(app: revenipe.App, clock: Clock) -> None:
    app.grant_product("carol", "pro")  # 1000 monthly, rollover max 500
    app.track("carol", "monthly_credits", 100 + 200)  # free 100 drawn first (older)
    clock.advance(days=28)
    state = {
        e.access_source_id: e.remaining
        for e in app.state("carol").entitlements
        if e.entitlement_id == "monthly_credits"
    }
    assert sorted(state.values()) == [100, 1500]


def test_expiry_writes_off_and_refuses(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    granted = app.grant_product("dave", "pack_50")  # expires after 30 days
    clock.advance(days=30)
    result = app.track("dave", "purchased_credits", 1)
    assert not result.success and result.error == RefusalCode.ACCESS_EXPIRED
    restricted = app.track("dave", "credits", 1, access_source_id=granted.access_source_id)
    assert restricted.error == RefusalCode.ACCESS_EXPIRED
    assert "purchased_credits" not in balances(app, "dave")
    assert_verified(backend, app.app_id)


def test_source_restriction(app: revenipe.App) -> None:
    pack = app.grant_product("erin", "pack_50")
    result = app.track("erin", "credits", 5, access_source_id=pack.access_source_id)
    assert result.success and result.remaining == 45
    assert balances(app, "erin")["monthly_credits"] == 100
    other = app.grant_product("frank", "pack_50")
    refused = app.track("erin", "credits", 5, access_source_id=other.access_source_id)
    assert refused.error == RefusalCode.UNKNOWN_ACCESS_SOURCE
    assert balances(app, "frank")["purchased_credits"] == 50


def test_refusal_codes(app: revenipe.App) -> None:
    assert app.track("gina", "nope", 1).error == RefusalCode.UNKNOWN_ENTITLEMENT
    assert app.track("gina", "export_hd", 1).error == RefusalCode.NOT_METERED
    assert app.track("gina", "purchased_credits", 1).error == RefusalCode.NO_ACCESS


def test_apps_are_isolated(backend: revenipe.Backend, demo_catalog: revenipe.Catalog) -> None:
    a = backend.app(backend.create_app("a", demo_catalog).app.id)
    b = backend.app(backend.create_app("b", demo_catalog).app.id)
    a.track("alice", "credits", 30)
    assert b.login("alice") != a.login("alice")
    assert balances(b, "alice")["credits"] == 100
    assert balances(a, "alice")["credits"] == 70
    event = a.track("alice", "credits", 1).usage_event_id
    assert event
    with pytest.raises(RevenipeError) as error:
        b.reverse(event)
    assert error.value.code is ErrorCode.USAGE_EVENT_NOT_FOUND


def test_reapplying_catalog_keeps_balances(
    backend: revenipe.Backend, app: revenipe.App, demo_catalog: revenipe.Catalog
) -> None:
    app.track("alice", "credits", 10)
    assert not app.apply_catalog(demo_catalog).changed
    document = demo_catalog.to_document()
    document["products"][0]["grants"][0]["amount"] = 500
    changed = app.apply_catalog(revenipe.catalog.parse_catalog(document))
    assert changed.changed and changed.version == 2
    assert balances(app, "alice")["credits"] == 90  # existing grant untouched
    app.track("newbie", "credits", 1)
    assert balances(app, "newbie")["credits"] == 499  # new customers get the new terms
    assert_verified(backend, app.app_id)
