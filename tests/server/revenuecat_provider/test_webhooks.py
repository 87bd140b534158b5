"""RevenueCat's webhook endpoint: authorization, exactly once, any order, apps kept
apart; every event type we map; on SQLite and PostgreSQL. `revenipe verify` runs after
each test (`rc_world`).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from revenipe.storage.schema import grants, ledger_entries, webhook_events

from ..conftest import Tenant, _add_customer, assert_error, customer_outcome
from ..test_purchases_sandbox import CANCEL, CHANGE
from .conftest import BASIC, PACK_50, PACK_100, PRO, RcWorld, Store


def utc(at: str) -> datetime:
    return datetime.fromisoformat(at).replace(tzinfo=UTC)


def recorded(world: RcWorld, tenant: Tenant) -> list[tuple[str, str]]:
    with world.backend.database.read() as conn:
        rows = conn.execute(
            select(webhook_events.c.type, webhook_events.c.outcome)
            .where(webhook_events.c.app_id == tenant.app_id)
            .order_by(webhook_events.c.received_at, webhook_events.c.event_id)
        )
        return [(r.type, r.outcome) for r in rows]


def ledger_size(world: RcWorld) -> int:
    with world.backend.database.read() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one())


def a_purchase(store: Store, user: str = "alice") -> dict[str, Any]:
    return store.event(
        "NON_RENEWING_PURCHASE",
        "2026-02-01T09:00:00",
        user=user,
        product=PACK_100,
        purchased="2026-02-01T09:00:00",
        transaction="7000000001",
    )


# --- authorization, malformed bodies, events of no use -------------------------------


def test_deliveries_without_the_configured_authorization_apply_nothing(
    rc_world: RcWorld,
) -> None:
    world = rc_world
    event = a_purchase(Store())
    before, entries = world.credits(), ledger_size(world)
    body = json.dumps(event).encode()
    url = f"/v1/webhooks/revenuecat/{world.a.app_id}"
    right = world.authorizations[world.a.app_id]
    for why, headers in {
        "none": {},
        "empty": {"Authorization": ""},
        "another value": {"Authorization": "Bearer " + "x" * 32},
        "app B's value": {"Authorization": world.authorizations[world.b.app_id]},
        "a prefix of it": {"Authorization": right[:-1]},
        "it, extended": {"Authorization": right + "x"},
        "the app's secret key": world.a.api(),
    }.items():
        answer = world.http.post(url, content=body, headers=headers)
        assert_error(answer, 401, "webhook_unauthorized"), why
    assert_error(
        world.http.post("/v1/webhooks/revenuecat/app_doesnotexist", content=body),
        404,
        "app_not_found",
    )
    assert world.credits() == before and ledger_size(world) == entries
    assert recorded(world, world.a) == [], "a refused delivery is not even recorded"
    assert world.applied(event) == "applied"
    assert world.credits() == before + 100


def test_apps_without_revenuecat_refuse_its_events(rc_world: RcWorld, backend: Any) -> None:
    world = rc_world
    event = a_purchase(Store())
    live = backend.create_app("live app, RevenueCat not set")
    sandbox = backend.create_app("sandbox app", sandbox=True)
    for app_id in (live.app.id, sandbox.app.id):
        answer = world.http.post(
            f"/v1/webhooks/revenuecat/{app_id}",
            json=event,
            headers={"Authorization": "Bearer " + "y" * 32},
        )
        assert_error(answer, 409, "provider_not_configured")
    # Removed: refused again, and what it gave stays.
    assert world.applied(event) == "applied"
    removed = world.http.delete("/v1/providers/revenuecat", headers=world.a.api())
    assert removed.status_code == 204 and removed.content == b""
    assert_error(world.deliver(event), 409, "provider_not_configured")
    assert world.credits() == 100 + 100, "the free tier and the pack"


def test_malformed_bodies_are_refused_with_the_field_named(rc_world: RcWorld) -> None:
    world = rc_world
    good = a_purchase(Store())["event"]
    cases: dict[bytes, str] = {
        b"[1, 2": "not JSON",
        b"[]": "no `event`",
        json.dumps({"api_version": "1.0"}).encode(): "no `event`",
        json.dumps({"event": {**good, "id": None}}).encode(): "event.id",
        json.dumps({"event": {**good, "id": ""}}).encode(): "event.id",
        json.dumps({"event": {**good, "id": "x" * 256}}).encode(): "event.id",
        json.dumps({"event": {**good, "type": 7}}).encode(): "event.type",
        json.dumps({"event": {**good, "event_timestamp_ms": None}}).encode(): (
            "event.event_timestamp_ms"
        ),
        json.dumps({"event": {**good, "purchased_at_ms": "yesterday"}}).encode(): (
            "event.purchased_at_ms"
        ),
        json.dumps({"event": {**good, "purchased_at_ms": 1.5}}).encode(): "event.purchased_at_ms",
        json.dumps({"event": {**good, "expiration_at_ms": True}}).encode(): (
            "event.expiration_at_ms"
        ),
        json.dumps({"event": {**good, "expiration_at_ms": -1}}).encode(): (
            "event.expiration_at_ms"
        ),
        json.dumps({"event": {**good, "transferred_to": "dave"}}).encode(): (
            "event.transferred_to"
        ),
        json.dumps({"event": {**good, "app_user_id": ["bob"]}}).encode(): "event.app_user_id",
    }
    for payload, named in cases.items():
        body = assert_error(world.deliver({}, payload=payload), 400, "webhook_refused")
        assert named in body["message"], (payload, body)
    too_big = json.dumps({"event": {**good, "padding": "x" * 70_000}}).encode()
    assert world.deliver({}, payload=too_big).status_code == 413
    assert recorded(world, world.a) == []


def test_test_events_unmapped_stores_and_products_are_acknowledged_and_ignored(
    rc_world: RcWorld,
) -> None:
    world = rc_world
    store = Store()
    before = world.credits()
    ignored = [
        store.event("TEST", "2026-02-01T09:00:00", product=None),
        store.event(
            "NON_RENEWING_PURCHASE",
            "2026-02-01T09:00:00",
            user="alice",
            product=PACK_100,
            purchased="2026-02-01T09:00:00",
            transaction="amzn1",
            store="AMAZON",
        ),
        store.event(
            "NON_RENEWING_PURCHASE",
            "2026-02-01T09:00:00",
            user="alice",
            product="com.example.unknown",
            purchased="2026-02-01T09:00:00",
            transaction="7000000002",
        ),
        # The Play Store id of a product, sent as if it were the App Store's.
        store.event(
            "NON_RENEWING_PURCHASE",
            "2026-02-01T09:00:00",
            user="alice",
            product="credits_100",
            purchased="2026-02-01T09:00:00",
            transaction="7000000003",
        ),
        store.event("SUBSCRIPTION_PAUSED", "2026-02-01T09:00:00", user="alice"),
        store.event(
            "NON_RENEWING_PURCHASE",
            "2026-02-01T09:00:00",
            user="alice",
            product=PRO,
            purchased="2026-02-01T09:00:00",
            transaction="7000000004",
        ),
    ]
    for event in ignored:
        assert world.applied(event) == "ignored", event["event"]["type"]
        assert world.applied(event) == "duplicate"
    assert world.credits() == before
    assert world.rows("alice") == []
    assert [o for _, o in recorded(world, world.a)] == ["ignored"] * len(ignored)


# --- exactly once, and isolation ------------------------------------------------------


def test_a_redelivery_applies_nothing_and_apps_never_touch_each_other(
    rc_world: RcWorld,
) -> None:
    world = rc_world
    store = Store()
    purchase = a_purchase(store, user="carol")
    # App A receives an event for "carol", whom only app B knows: A gets its own carol.
    assert world.applied(purchase, world.a) == "applied"
    assert world.applied(purchase, world.a) == "duplicate"
    assert world.credits("carol", world.b) == 100, "B's carol: her free tier only"
    assert world.credits("carol", world.a) == 200, "A's new carol: free tier and the pack"
    # The same event, delivered to B too, is B's own: applied once there.
    assert world.applied(purchase, world.b) == "applied"
    assert world.applied(purchase, world.b) == "duplicate"
    assert world.credits("carol", world.b) == 200
    assert world.credits("carol", world.a) == 200
    assert len(world.rows("carol", world.a)) == len(world.rows("carol", world.b)) == 1


def test_a_play_store_subscription_maps_by_its_subscription_id(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    world.at("2026-02-01T10:01:00")
    started = store.event(
        "INITIAL_PURCHASE",
        "2026-02-01T10:00:00",
        user="alice",
        product="pro_monthly:monthly-autorenew",
        purchased="2026-02-01T10:00:00",
        expires="2026-03-01T10:00:00",
        transaction="GPA.3300-0000-0000-00001",
        store="PLAY_STORE",
    )
    assert world.applied(started) == "applied"
    (sub,) = [s for s in world.state("alice")["subscriptions"] if s["provider"] == "revenuecat"]
    assert (sub["product_id"], sub["status"], sub["can_cancel"]) == ("pro", "active", False)
    assert sub["renews_at"] is not None and sub["renews_at"].startswith("2026-03-01T10:00:00")
    assert world.credits("alice") == 100 + 1000
    # The store manages it: the client protocol's calls refuse to.
    minted = world.http.post("/v1/customers/alice/tokens", headers=world.a.api())
    assert minted.status_code == 201
    world.a.customers["alice"].token = minted.json()["token"]
    for path, extra in (
        (CANCEL, {"cancel_mode": "immediately"}),
        (CHANGE, {"new_product_id": "basic"}),
    ):
        answer = world.http.post(
            path,
            json={
                "client_id": world.a.customers["alice"].client_id,
                "source_id": sub["access_source_id"],
                **extra,
            },
            headers=world.a.as_customer("alice"),
        )
        assert_error(answer, 409, "source_not_manageable")
    assert world.credits("alice") == 100 + 1000


# --- the life of a subscription, event by event ---------------------------------------


def test_an_expiration_that_arrives_before_its_purchase_still_ends_expired(
    rc_world: RcWorld,
) -> None:
    world = rc_world
    store = Store()
    started = store.event(
        "INITIAL_PURCHASE",
        "2026-02-01T10:00:00",
        purchased="2026-02-01T10:00:00",
        expires="2026-03-01T10:00:00",
        transaction="1000000001",
    )
    ended = store.event(
        "EXPIRATION",
        "2026-03-01T10:00:00",
        purchased="2026-02-01T10:00:00",
        expires="2026-03-01T10:00:00",
        transaction="1000000001",
        expiration_reason="UNSUBSCRIBE",
    )
    world.at("2026-03-02T00:00:00")
    assert world.applied(ended) == "pending", "waits for the subscription's start"
    assert world.rows("bob") == []
    assert world.applied(started) == "applied"
    (source,) = world.rows("bob")
    assert (source.product_id, source.status) == ("pro", "expired")
    assert source.ended_at is not None
    assert source.ended_at.replace(tzinfo=UTC) == utc("2026-03-01T10:00:00")
    assert world.credits("bob") == 100
    assert [s for s in world.state("bob")["subscriptions"] if s["provider"] == "revenuecat"] == []


def test_an_older_event_arriving_later_never_rolls_the_state_back(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    common = {
        "purchased": "2026-02-01T10:00:00",
        "expires": "2026-03-01T10:00:00",
        "transaction": "1000000001",
    }
    started = store.event("INITIAL_PURCHASE", "2026-02-01T10:00:00", **common)
    canceled = store.event(
        "CANCELLATION", "2026-02-10T10:00:00", cancel_reason="UNSUBSCRIBE", **common
    )
    uncanceled = store.event("UNCANCELLATION", "2026-02-11T10:00:00", **common)
    world.at("2026-02-12T00:00:00")
    for event in (started, uncanceled, canceled):
        assert world.applied(event) == "applied"
    (sub,) = [s for s in world.state("bob")["subscriptions"] if s["provider"] == "revenuecat"]
    assert sub["will_cancel_at_period_end"] is False, "the uncancellation is the latest"
    assert sub["status"] == "active"


def test_billing_issues_keep_access_until_the_store_ends_it(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    common = {"transaction": "1000000001", "user": "alice"}
    world.at("2026-03-01T10:05:00")
    assert (
        world.applied(
            store.event(
                "INITIAL_PURCHASE",
                "2026-02-01T10:00:00",
                purchased="2026-02-01T10:00:00",
                expires="2026-03-01T10:00:00",
                **common,
            )
        )
        == "applied"
    )
    # The renewal failed; the store grants a grace period to March 17.
    issue = store.event(
        "BILLING_ISSUE",
        "2026-03-01T10:01:00",
        purchased="2026-02-01T10:00:00",
        expires="2026-03-17T10:00:00",
        grace_period_expiration_at_ms=None,
        **common,
    )
    assert world.applied(issue) == "applied"
    (sub,) = [s for s in world.state("alice")["subscriptions"] if s["provider"] == "revenuecat"]
    assert sub["status"] == "past_due"
    # Access goes on through the grace period, on the plan's monthly grid: March's
    # refill came (1000 + 500 carried), as it does for Stripe's past due.
    assert world.credits("alice") == 100 + 1500
    world.at("2026-03-17T10:05:00")
    expired = store.event(
        "EXPIRATION",
        "2026-03-17T10:00:00",
        purchased="2026-02-01T10:00:00",
        expires="2026-03-17T10:00:00",
        expiration_reason="BILLING_ERROR",
        **common,
    )
    assert world.applied(expired) == "applied"
    assert world.credits("alice") == 100
    (source,) = world.rows("alice")
    assert source.status == "expired"


def test_a_refunded_subscription_is_taken_back_and_stays_taken_back(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    common = {
        "purchased": "2026-02-01T10:00:00",
        "expires": "2026-03-01T10:00:00",
        "transaction": "1000000001",
        "user": "alice",
    }
    world.at("2026-02-01T10:01:00")
    assert world.applied(store.event("INITIAL_PURCHASE", "2026-02-01T10:00:00", **common)) == (
        "applied"
    )
    # The plan's grant pays first (it expires soonest).
    spent = world.track("alice", world.a, "monthly_credits", 950)
    assert spent["success"] is True
    world.at("2026-02-05T12:00:00")
    refund = store.event(
        "CANCELLATION", "2026-02-05T11:00:00", cancel_reason="CUSTOMER_SUPPORT", **common
    )
    assert world.applied(refund) == "applied"
    assert world.credits("alice") == 100, "the free tier; the plan's 50 left were revoked"
    (source,) = world.rows("alice")
    assert source.status == "refunded"
    late = store.event(
        "RENEWAL",
        "2026-03-01T10:00:00",
        **{**common, "purchased": "2026-03-01T10:00:00", "expires": "2026-04-01T10:00:00"},
    )
    world.at("2026-03-01T10:05:00")
    assert world.applied(late) == "ignored"
    assert world.credits("alice") == 100, "only the free tier"
    with world.backend.database.read() as conn:
        kinds = [
            (r.kind, r.amount, r.effective_at.replace(tzinfo=UTC))
            for r in conn.execute(
                select(ledger_entries)
                .join(grants, grants.c.id == ledger_entries.c.grant_id)
                .where(grants.c.source_id == source.id)
                .order_by(ledger_entries.c.id)
            )
            if r.amount
        ]
    granted_at, refunded_at = utc("2026-02-01T10:00:00"), utc("2026-02-05T11:00:00")
    assert kinds == [
        ("granted", 1000, granted_at),
        ("consumed", -950, utc("2026-02-01T10:01:00")),
        ("revoked", -50, refunded_at),
    ]


# --- any order, any number of times ----------------------------------------------------


def scenario(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """Bob's story with the app, as RevenueCat tells it: (when it is sent, event)."""
    sub = {"transaction": "1000000001"}
    steps: list[tuple[str, dict[str, Any]]] = []

    def add(at: str, type_: str, **fields: Any) -> None:
        steps.append((at, store.event(type_, at, **fields)))

    # A 7-day trial of pro, which converts.
    add(
        "2026-02-01T10:00:00",
        "INITIAL_PURCHASE",
        purchased="2026-02-01T10:00:00",
        expires="2026-02-08T10:00:00",
        period_type="TRIAL",
        **sub,
    )
    add(
        "2026-02-03T09:00:00",
        "NON_RENEWING_PURCHASE",
        product=PACK_100,
        purchased="2026-02-03T09:00:00",
        transaction="2000000001",
    )
    add(
        "2026-02-04T09:00:00",
        "NON_RENEWING_PURCHASE",
        product=PACK_50,
        purchased="2026-02-04T09:00:00",
        transaction="2000000002",
    )
    add(
        "2026-02-05T09:00:00",
        "CANCELLATION",
        product=PACK_50,
        purchased="2026-02-04T09:00:00",
        transaction="2000000002",
        cancel_reason="CUSTOMER_SUPPORT",
    )
    add(
        "2026-02-08T10:00:00",
        "RENEWAL",
        purchased="2026-02-08T10:00:00",
        expires="2026-03-08T10:00:00",
        transaction="1000000002",
        original_transaction="1000000001",
        is_trial_conversion=True,
    )
    add(
        "2026-03-08T10:00:00",
        "RENEWAL",
        purchased="2026-03-08T10:00:00",
        expires="2026-04-08T10:00:00",
        transaction="1000000003",
        original_transaction="1000000001",
    )
    # A downgrade to basic: it takes effect at the next renewal.
    add(
        "2026-03-20T12:00:00",
        "PRODUCT_CHANGE",
        purchased="2026-03-08T10:00:00",
        expires="2026-04-08T10:00:00",
        transaction="1000000003",
        original_transaction="1000000001",
        new_product_id=BASIC,
    )
    add(
        "2026-04-08T10:00:00",
        "RENEWAL",
        product=BASIC,
        purchased="2026-04-08T10:00:00",
        expires="2026-05-08T10:00:00",
        transaction="1000000004",
        original_transaction="1000000001",
    )
    basic = {
        "product": BASIC,
        "purchased": "2026-04-08T10:00:00",
        "expires": "2026-05-08T10:00:00",
        "transaction": "1000000004",
        "original_transaction": "1000000001",
    }
    add("2026-04-20T08:00:00", "CANCELLATION", cancel_reason="UNSUBSCRIBE", **basic)
    add("2026-04-22T08:00:00", "UNCANCELLATION", **basic)
    add("2026-04-25T08:00:00", "CANCELLATION", cancel_reason="UNSUBSCRIBE", **basic)
    add("2026-05-08T10:00:00", "EXPIRATION", expiration_reason="UNSUBSCRIBE", **basic)
    # Bob restores his purchases on another account: the pack goes with them.
    add(
        "2026-05-10T08:00:00",
        "TRANSFER",
        product=None,
        transferred_from=["bob"],
        transferred_to=["dave"],
    )
    return steps


def outcome(world: RcWorld, tenant: Tenant, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: customer_outcome(world.backend, world.http, tenant, name) for name in names}


def test_events_in_order_once_or_shuffled_twice_give_the_same_access_and_ledger(
    rc_world: RcWorld,
) -> None:
    world = rc_world
    steps = scenario(Store())
    # Bob and dave in app A get each event as it happens; in three more apps, bob and
    # dave get nothing until the end, then every event twice, shuffled (one seed each).
    in_order = world.a
    shuffled = [world.tenant(f"shuffled {seed}") for seed in (1, 2, 3)]
    for tenant in (in_order, *shuffled):
        for name in ("bob", "dave"):
            if name not in tenant.customers:
                _add_customer(world.http, tenant, name)
    for at, event in steps:
        world.at(at)
        world.clock.advance(minutes=1)  # RevenueCat's events come a little later
        assert world.applied(event, in_order) in ("applied", "pending")
    world.clock.advance(days=1)
    for seed, tenant in zip((1, 2, 3), shuffled, strict=True):
        deliveries = [event for _, event in steps] * 2
        random.Random(seed).shuffle(deliveries)
        outcomes = [world.applied(event, tenant) for event in deliveries]
        assert outcomes.count("duplicate") == len(steps), seed
    # Then, everywhere: bob spends credits, dave spends from the pack he received.
    for tenant in (in_order, *shuffled):
        assert world.track("bob", tenant, "credits", 60)["success"] is True
        spent = world.track("dave", tenant, "purchased_credits", 30)
        assert (spent["success"], spent["remaining"]) == (True, 70)
    expected = outcome(world, in_order, ("bob", "dave"))
    for seed, tenant in zip((1, 2, 3), shuffled, strict=True):
        assert outcome(world, tenant, ("bob", "dave")) == expected, f"seed {seed}"

    # And the outcome is the story told.
    bob, dave = expected["bob"]["ledger"], expected["dave"]["ledger"]

    def entries(ledger: dict[Any, Any], product: str) -> list[list[Any]]:
        return [v for k, v in sorted(ledger.items()) if k[:2] == (product, "revenuecat")]

    def kinds(rows: list[Any]) -> list[tuple[str, int, datetime]]:
        return [(kind, amount, at.replace(tzinfo=UTC)) for kind, amount, _, at in rows]

    (pack_50,) = entries(bob, "pack_50")
    assert kinds(pack_50) == [
        ("granted", 50, utc("2026-02-04T09:00:00")),
        ("revoked", -50, utc("2026-02-05T09:00:00")),
    ]
    (pack_100_bob,) = entries(bob, "pack_100")
    assert kinds(pack_100_bob) == [
        ("granted", 100, utc("2026-02-03T09:00:00")),
        ("revoked", -100, utc("2026-05-10T08:00:00")),
    ]
    (pack_100_dave,) = entries(dave, "pack_100")
    assert [(k, a) for k, a, _ in kinds(pack_100_dave)] == [("granted", 100), ("consumed", -30)]
    assert kinds(pack_100_dave)[0][2] == utc("2026-05-10T08:00:00")
    statuses = {s[0]: s[3] for s in expected["bob"]["sources"] if s[1] == "revenuecat"}
    assert statuses == {"pack_50": "refunded", "pack_100": "transferred", "basic": "expired"}
    pro_monthly = [
        kinds(v)
        for k, v in sorted(bob.items())
        if k[:3] == ("basic", "revenuecat", "monthly_credits")
    ]
    # The subscription's monthly credits: pro's (trial, then two paid months) until the
    # downgrade took effect at the April renewal, then basic's until it expired.
    assert len(pro_monthly) == 2
    pro, basic = pro_monthly
    # (March's reset left 1500 as it was: 1000 + 500 carried; no entry.)
    assert pro == [
        ("granted", 1000, utc("2026-02-01T10:00:00")),
        ("reset", 500, utc("2026-02-08T10:00:00")),  # the trial's end: 1000 + 500 carried
        ("expired", -1500, utc("2026-04-08T10:00:00")),  # the downgrade took effect
    ]
    assert basic == [
        ("granted", 300, utc("2026-04-08T10:00:00")),
        ("expired", -300, utc("2026-05-08T10:00:00")),
    ]
    (plan,) = [
        s for s in expected["bob"]["sources"] if s[1] == "revenuecat" and s[2] == "subscription"
    ]
    assert (plan[0], plan[3], plan[5].replace(tzinfo=UTC)) == (
        "basic",
        "expired",
        utc("2026-05-08T10:00:00"),
    )
    assert plan[10].replace(tzinfo=UTC) == utc("2026-02-08T10:00:00"), "the trial's end"
    assert [s for s in expected["bob"]["subscriptions"] if s["provider"] == "revenuecat"] == []
