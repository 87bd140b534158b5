"""What each kind of RevenueCat event does to access: plan changes (at once or at the
renewal), extensions, resubscriptions, transfers in either order; on SQLite and
PostgreSQL. `revenipe verify` runs after each test (`rc_world`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from revenipe.storage.schema import grants, ledger_entries

from .conftest import PACK_100, PRO, RcWorld, Store


def utc(at: str) -> datetime:
    return datetime.fromisoformat(at).replace(tzinfo=UTC)


def store_subscription(world: RcWorld, name: str) -> dict[str, Any] | None:
    found = [s for s in world.state(name)["subscriptions"] if s["provider"] == "revenuecat"]
    assert len(found) <= 1, found
    return found[0] if found else None


def entries_by_product(world: RcWorld, name: str) -> list[tuple[str, str, int, datetime]]:
    """(product, kind, amount, effective) of the customer's RevenueCat grants' entries."""
    rows = {r.id: r for r in world.rows(name)}
    with world.backend.database.read() as conn:
        found = conn.execute(
            select(grants.c.source_id, grants.c.entitlement_id, ledger_entries)
            .join(grants, grants.c.id == ledger_entries.c.grant_id)
            .where(grants.c.source_id.in_(list(rows)))
            .order_by(ledger_entries.c.id)
        )
        return [
            (
                f"{rows[r.source_id].product_id}/{r.entitlement_id}",
                r.kind,
                r.amount,
                r.effective_at.replace(tzinfo=UTC),
            )
            for r in found
        ]


def test_a_downgrade_shows_as_pending_and_takes_effect_at_the_renewal(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    period = {"purchased": "2026-02-01T10:00:00", "expires": "2026-03-01T10:00:00"}
    sub = {"user": "alice", "original_transaction": "3000000001"}
    world.at("2026-02-10T00:00:00")
    world.applied(
        store.event(
            "INITIAL_PURCHASE", "2026-02-01T10:00:00", transaction="3000000001", **sub, **period
        )
    )
    change = store.event(
        "PRODUCT_CHANGE",
        "2026-02-09T12:00:00",
        transaction="3000000001",
        new_product_id="com.example.basic.monthly",
        **sub,
        **period,
    )
    assert world.applied(change) == "applied"
    shown = store_subscription(world, "alice")
    assert shown is not None and shown["product_id"] == "pro"
    pending = shown["pending_change"]
    assert pending is not None
    assert (pending["type"], pending["billing_mode"], pending["status"]) == (
        "downgrade",
        "period_end",
        "pending",
    )
    assert (pending["from_product_id"], pending["to_product_id"]) == ("pro", "basic")
    assert pending["effective_at"].startswith("2026-03-01T10:00:00")
    assert world.credits("alice") == 100 + 1000, "pro's credits until the renewal"
    world.at("2026-03-01T10:01:00")
    renewal = store.event(
        "RENEWAL",
        "2026-03-01T10:00:00",
        product="com.example.basic.monthly",
        purchased="2026-03-01T10:00:00",
        expires="2026-04-01T10:00:00",
        transaction="3000000002",
        **sub,
    )
    assert world.applied(renewal) == "applied"
    shown = store_subscription(world, "alice")
    assert shown is not None
    assert (shown["product_id"], shown["pending_change"]) == ("basic", None)
    assert world.credits("alice") == 100 + 300
    assert [e for e in entries_by_product(world, "alice") if e[0].endswith("monthly_credits")] == [
        ("basic/monthly_credits", "granted", 1000, utc("2026-02-01T10:00:00")),
        ("basic/monthly_credits", "expired", -1000, utc("2026-03-01T10:00:00")),
        ("basic/monthly_credits", "granted", 300, utc("2026-03-01T10:00:00")),
    ]


def test_an_upgrade_takes_effect_when_the_store_bills_the_new_product(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    sub = {"user": "alice", "original_transaction": "3000000001"}
    world.at("2026-02-10T12:00:00")
    world.applied(
        store.event(
            "INITIAL_PURCHASE",
            "2026-02-01T10:00:00",
            purchased="2026-02-01T10:00:00",
            expires="2026-03-01T10:00:00",
            transaction="3000000001",
            **sub,
        )
    )
    assert world.track("alice", world.a, "monthly_credits", 400)["success"] is True
    # The App Store upgrades at once: the old period ends now, the new product bills now.
    upgrade = [
        store.event(
            "PRODUCT_CHANGE",
            "2026-02-10T10:00:00",
            purchased="2026-02-01T10:00:00",
            expires="2026-02-10T10:00:00",
            transaction="3000000001",
            new_product_id="com.example.pro.yearly",
            **sub,
        ),
        store.event(
            "RENEWAL",
            "2026-02-10T10:00:05",
            product="com.example.pro.yearly",
            purchased="2026-02-10T10:00:00",
            expires="2027-02-10T10:00:00",
            transaction="3000000002",
            **sub,
        ),
    ]
    # Either order gives the same.
    for event in reversed(upgrade):
        assert world.applied(event) == "applied"
    shown = store_subscription(world, "alice")
    assert shown is not None
    assert (shown["product_id"], shown["pending_change"]) == ("pro_yearly", None)
    assert shown["renews_at"].startswith("2027-02-10T10:00:00")
    assert world.credits("alice") == 100 + 1000
    monthly = [e for e in entries_by_product(world, "alice") if e[0].endswith("monthly_credits")]
    assert [(kind, amount, at) for _, kind, amount, at in monthly] == [
        ("granted", 1000, utc("2026-02-01T10:00:00")),
        ("consumed", -400, utc("2026-02-10T12:00:00")),
        ("expired", -600, utc("2026-02-10T10:00:00")),
        ("granted", 1000, utc("2026-02-10T10:00:00")),
    ]


def test_extensions_and_resubscriptions(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    sub = {"user": "alice", "original_transaction": "3000000001"}
    first = {"purchased": "2026-02-01T10:00:00", "transaction": "3000000001", **sub}
    world.at("2026-02-20T00:00:00")
    world.applied(
        store.event(
            "INITIAL_PURCHASE", "2026-02-01T10:00:00", expires="2026-03-01T10:00:00", **first
        )
    )
    # Support gave ten more days.
    extended = store.event(
        "SUBSCRIPTION_EXTENDED", "2026-02-20T00:00:00", expires="2026-03-11T10:00:00", **first
    )
    assert world.applied(extended) == "applied"
    shown = store_subscription(world, "alice")
    assert shown is not None and shown["renews_at"].startswith("2026-03-11T10:00:00")
    world.at("2026-03-12T00:00:00")
    expired = store.event(
        "EXPIRATION", "2026-03-11T10:00:00", expires="2026-03-11T10:00:00", **first
    )
    assert world.applied(expired) == "applied"
    assert store_subscription(world, "alice") is None
    assert world.credits("alice") == 100
    # Back a month later, on the same subscription: fresh grants from then.
    world.at("2026-04-15T09:01:00")
    back = store.event(
        "RENEWAL",
        "2026-04-15T09:00:00",
        purchased="2026-04-15T09:00:00",
        expires="2026-05-15T09:00:00",
        transaction="3000000002",
        **sub,
    )
    assert world.applied(back) == "applied"
    shown = store_subscription(world, "alice")
    assert shown is not None and shown["status"] == "active"
    assert world.credits("alice") == 100 + 1000
    (source,) = world.rows("alice")
    assert source.billing_anchor is not None
    assert source.billing_anchor.replace(tzinfo=UTC) == utc("2026-04-15T09:00:00")


def test_a_transfer_moves_what_is_left_and_later_events_follow_it(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    sub = {"user": "alice", "original_transaction": "3000000001"}
    world.at("2026-02-10T00:00:00")
    world.applied(
        store.event(
            "INITIAL_PURCHASE",
            "2026-02-01T10:00:00",
            purchased="2026-02-01T10:00:00",
            expires="2026-03-01T10:00:00",
            transaction="3000000001",
            **sub,
        )
    )
    assert world.track("alice", world.a, "monthly_credits", 300)["success"] is True
    world.at("2026-02-15T00:00:00")
    transfer = store.event(
        "TRANSFER",
        "2026-02-14T12:00:00",
        user="erin",
        product=None,
        transferred_from=["alice"],
        transferred_to=["erin"],
    )
    assert world.applied(transfer) == "applied"
    assert world.credits("alice") == 100, "alice keeps her free tier only"
    assert world.credits("erin") == 100 + 700, "erin: her free tier and what was left"
    assert store_subscription(world, "alice") is None
    moved = store_subscription(world, "erin")
    assert moved is not None and moved["product_id"] == "pro"
    (old,) = world.rows("alice")
    assert old.status == "transferred"
    # The renewal, now erin's: her plan refills (700 left: 1000 + 500 carried).
    world.at("2026-03-01T10:01:00")
    renewal = store.event(
        "RENEWAL",
        "2026-03-01T10:00:00",
        user="erin",
        purchased="2026-03-01T10:00:00",
        expires="2026-04-01T10:00:00",
        transaction="3000000002",
        original_transaction="3000000001",
    )
    assert world.applied(renewal) == "applied"
    assert world.credits("erin") == 100 + 1500
    assert world.credits("alice") == 100


def test_a_transfer_learned_before_the_purchase_it_moves(rc_world: RcWorld) -> None:
    world = rc_world
    store = Store()
    purchase = store.event(
        "NON_RENEWING_PURCHASE",
        "2026-02-01T09:00:00",
        user="alice",
        product=PACK_100,
        purchased="2026-02-01T09:00:00",
        transaction="4000000001",
    )
    transfer = store.event(
        "TRANSFER",
        "2026-02-05T09:00:00",
        user="erin",
        product=None,
        transferred_from=["alice"],
        transferred_to=["erin"],
    )
    world.at("2026-02-06T00:00:00")
    assert world.applied(transfer) == "applied"
    assert world.applied(purchase) == "applied"
    assert world.credits("alice") == 100
    assert world.credits("erin") == 100 + 100
    assert [(p, k, a, at) for p, k, a, at in entries_by_product(world, "erin")] == [
        ("pack_100/purchased_credits", "granted", 100, utc("2026-02-05T09:00:00"))
    ]
    # A purchase made after the transfer stays where it was made.
    later = store.event(
        "NON_RENEWING_PURCHASE",
        "2026-02-05T10:00:00",
        user="alice",
        product=PACK_100,
        purchased="2026-02-05T10:00:00",
        transaction="4000000002",
    )
    assert world.applied(later) == "applied"
    assert world.credits("alice") == 100 + 100
    assert world.applied(store.event("INITIAL_PURCHASE", "2026-02-01T09:00:00", product=PRO)) == (
        "ignored"
    ), "a subscription event without its transaction ids"
