"""Stripe's webhook endpoint: signatures, exactly once, any order, apps kept apart; on
SQLite and PostgreSQL. `revenipe verify` runs after each test (`stripe_world`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from revenipe.storage.schema import ledger_entries, webhook_events

from ..conftest import Tenant, _add_customer, assert_error, customer_outcome, ok
from ..test_purchases_sandbox import CANCEL, CHANGE
from .conftest import StripeWorld
from .fake_stripe import sign


def recorded_events(world: StripeWorld, tenant: Tenant) -> list[tuple[str, str, str]]:
    with world.backend.database.read() as conn:
        rows = conn.execute(
            select(webhook_events.c.event_id, webhook_events.c.type, webhook_events.c.outcome)
            .where(webhook_events.c.app_id == tenant.app_id)
            .order_by(webhook_events.c.event_id)
        )
        return [tuple(r) for r in rows]


def ledger_size(world: StripeWorld) -> int:
    with world.backend.database.read() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one())


def paid_pack(
    world: StripeWorld, name: str = "alice", tenant: Tenant | None = None
) -> dict[str, Any]:
    """A pack bought on a payment sheet and paid: Stripe's event, not delivered yet."""
    tenant = tenant or world.a
    sheet = ok(world.start(name, tenant, product_id="pack_100", purchase_method="payment_sheet"))
    intent_id = sheet["payment_sheet"]["payment_intent_client_secret"].split("_secret_")[0]
    return world.fake.pay_intent(intent_id)


def test_forged_stale_tampered_and_replayed_signatures_are_refused_with_nothing_applied(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    event = paid_pack(world)
    before, entries = world.credits(), ledger_size(world)
    body = json.dumps(event).encode()
    now = int(time.time())
    secret = world.account(world.a).webhook_secret
    refused = {
        "another secret": world.deliver(event, secret="whsec_" + "x" * 32),
        "app B's secret": world.deliver(event, secret=world.account(world.b).webhook_secret),
        "stale": world.deliver(event, timestamp=now - 301),
        "from the future": world.deliver(event, timestamp=now + 3600),
        "tampered body": world.deliver(
            event,
            payload=body.replace(b'"succeeded"', b'"succeeded" '),
            signature=sign(body, secret),
        ),
        "no v1": world.deliver(event, signature=f"t={now}"),
        "garbage": world.deliver(event, signature="not a signature"),
        "not json": world.deliver(event, payload=b"[1, 2", signature=sign(b"[1, 2", secret)),
    }
    for why, answer in refused.items():
        assert_error(answer, 400, "webhook_refused"), why
    no_header = world.http.post(f"/v1/webhooks/stripe/{world.a.app_id}", content=body)
    assert_error(no_header, 400, "webhook_refused")
    assert world.credits() == before and ledger_size(world) == entries
    assert recorded_events(world, world.a) == [], "a refused delivery is not even recorded"

    header = sign(body, secret, now)
    first = world.deliver(event, signature=header)
    assert ok(first) == {"received": True, "event_id": event["id"], "outcome": "applied"}
    assert world.credits() == before + 100
    entries = ledger_size(world)
    # The same signed delivery again is a replay: refused.
    assert_error(world.deliver(event, signature=header), 400, "webhook_refused")
    # Stripe's redelivery is signed anew: answered 2xx, applied never again.
    again = ok(world.deliver(event, timestamp=now + 1))
    assert again["outcome"] == "duplicate"
    assert_error(world.deliver(event, timestamp=now + 1), 400, "webhook_refused")
    assert world.credits() == before + 100 and ledger_size(world) == entries
    assert recorded_events(world, world.a) == [(event["id"], "payment_intent.succeeded", "applied")]


def test_events_of_no_use_are_recorded_and_answered_2xx(stripe_world: StripeWorld) -> None:
    world = stripe_world
    paid_pack(world)
    (created,) = [e for e in world.fake.events if e["type"] == "customer.created"]
    assert ok(world.deliver(created))["outcome"] == "ignored"
    unknown = world.fake.event("balance.available", {"id": "bal_1", "object": "balance"})
    assert ok(world.deliver(unknown))["outcome"] == "ignored"
    assert ok(world.deliver(unknown, timestamp=int(time.time()) + 2))["outcome"] == "duplicate"
    assert {(t, o) for _, t, o in recorded_events(world, world.a)} == {
        ("customer.created", "ignored"),
        ("balance.available", "ignored"),
    }


def test_webhooks_need_a_configured_live_app(stripe_world: StripeWorld, backend: Any) -> None:
    world = stripe_world
    event = world.fake.event("balance.available", {"id": "bal_1", "object": "balance"})
    sandbox = backend.create_app("sandbox app", sandbox=True)
    body = json.dumps(event).encode()
    for app_id, status, code in (
        (sandbox.app.id, 409, "provider_not_configured"),
        ("app_doesnotexist", 404, "app_not_found"),
    ):
        answer = world.http.post(
            f"/v1/webhooks/stripe/{app_id}",
            content=body,
            headers={"Stripe-Signature": sign(body, world.account(world.a).webhook_secret)},
        )
        assert_error(answer, status, code)
    # A key set without a webhook secret yet: refused until the secret is set.
    live = backend.create_app("live app")
    headers = {"Authorization": f"Bearer {live.secret_key}"}
    ok(
        world.http.put(
            "/v1/providers/stripe", json={"secret_key": "sk_test_" + "c" * 24}, headers=headers
        )
    )
    answer = world.http.post(
        f"/v1/webhooks/stripe/{live.app.id}",
        content=body,
        headers={"Stripe-Signature": sign(body, "whsec_" + "c" * 32)},
    )
    assert_error(answer, 409, "provider_not_configured")


def test_objects_naming_another_apps_customer_never_touch_it(stripe_world: StripeWorld) -> None:
    world = stripe_world
    alice = world.a.customers["alice"].client_id
    before = world.state("alice")
    key_b = world.account(world.b).secret_key
    # App B's Stripe account holds objects whose metadata names app A's customer.
    carol_stripe = world.fake._create_customer({"metadata": {}}, key_b)["id"]
    price = world.fake.get("price_pro", key_b)
    for metadata in (
        {
            "revenipe_app_id": world.a.app_id,
            "revenipe_customer_id": alice,
            "revenipe_product_id": "pro",
        },
        {"revenipe_customer_id": alice, "revenipe_product_id": "pro"},
    ):
        sub = world.fake.new_subscription(
            key_b, customer=carol_stripe, price=price, metadata=metadata, paid=True
        )
        answer = world.deliver(world.fake.event("customer.subscription.created", sub), world.b)
        assert ok(answer)["outcome"] == "ignored"
        intent = world.fake._create_payment_intent(
            {
                "amount": 900,
                "currency": "usd",
                "customer": carol_stripe,
                "metadata": {**metadata, "revenipe_product_id": "pack_100"},
            },
            key_b,
        )
        answer = world.deliver(world.fake.pay_intent(intent["id"]), world.b)
        assert ok(answer)["outcome"] == "ignored"
    assert world.state("alice") == before
    assert world.rows("carol", world.b) == [], "nor does it give carol anything"
    # A Stripe customer linked to no customer of B's, without metadata: ignored too.
    sub = world.fake.new_subscription(
        key_b, customer=carol_stripe, price=price, metadata={}, paid=True
    )
    assert (
        ok(world.deliver(world.fake.event("customer.subscription.updated", sub), world.b))[
            "outcome"
        ]
        == "ignored"
    )


# --- any order, any number of times ------------------------------------------------------


class Run:
    """One customer's scenario in one app: our calls, Stripe's side, Stripe's events."""

    def __init__(self, world: StripeWorld, tenant: Tenant, name: str, *, deliver_at_once: bool):
        self.world, self.tenant, self.name = world, tenant, name
        self.deliver_at_once = deliver_at_once
        self.pending: list[dict[str, Any]] = []
        self.seen = len(world.fake.events)
        self.subscription = ""
        self.sources: dict[str, str] = {}
        self.intents: dict[str, str] = {}

    def collect(self) -> None:
        """Stripe's events since the last step, of this run's account."""
        account = self.world.account(self.tenant).secret_key
        fresh = self.world.fake.events[self.seen :]
        self.seen = len(self.world.fake.events)
        mine = [e for e in fresh if self.world.fake.event_accounts[e["id"]] == account]
        if self.deliver_at_once:
            self.world.deliver_all(mine, self.tenant)
        else:
            self.pending.extend(mine)

    def start(self, **body: Any) -> dict[str, Any]:
        return dict(ok(self.world.start(self.name, self.tenant, **body)))

    def call(self, path: str, **body: Any) -> dict[str, Any]:
        return dict(ok(self.world.call(path, self.name, self.tenant, **body)))


def _trial_with_saved_card(run: Run) -> None:
    started = run.start(
        product_id="trial_plan",
        purchase_method="payment_sheet",
        trial_payment_method_behavior="setup_intent",
    )
    intent = started["setup"]["setup_intent_id"]
    fake = run.world.fake
    run.subscription = next(
        i for i, o in fake.objects.items() if o.get("pending_setup_intent") == intent
    )
    fake.confirm_setup_intent(intent)
    fake.event("customer.subscription.updated", fake.objects[run.subscription])
    (source,) = [s for s in run.world.stripe_sources(run.name, run.tenant)]
    run.sources["plan"] = source["access_source_id"]


def _pack_by_checkout(run: Run) -> None:
    session = run.start(product_id="pack_100", purchase_method="hosted_checkout")["checkout"]
    run.world.fake.complete_checkout(session["session_id"])
    run.intents["pack_100"] = run.world.fake.objects[session["session_id"]]["payment_intent"]


def _pack_on_sheet(run: Run) -> None:
    sheet = run.start(product_id="pack_50", purchase_method="payment_sheet")["payment_sheet"]
    intent = sheet["payment_intent_client_secret"].split("_secret_")[0]
    run.world.fake.pay_intent(intent)
    run.intents["pack_50"] = intent


def _renew(run: Run) -> None:
    run.world.fake.renew(run.subscription)


def _upgrade(run: Run) -> None:
    run.call(CHANGE, source_id=run.sources["plan"], new_product_id="pro")


def _downgrade(run: Run) -> None:
    run.call(CHANGE, source_id=run.sources["plan"], new_product_id="basic")


def _cancel_at_period_end(run: Run) -> None:
    run.call(CANCEL, source_id=run.sources["plan"], cancel_mode="period_end")


def _dispute_lost(run: Run) -> None:
    opened = run.world.fake.open_dispute(run.intents["pack_100"])
    run.world.fake.close_dispute(opened["data"]["object"]["id"], "lost")


def _refund_pack_50(run: Run) -> None:
    run.world.fake.refund(run.intents["pack_50"])


SCENARIO: list[tuple[str, Callable[[Run], None]]] = [
    ("2026-01-31T12:00:00", _trial_with_saved_card),  # a 7-day trial, then monthly
    ("2026-02-01T09:00:00", _pack_by_checkout),
    ("2026-02-02T09:00:00", _pack_on_sheet),  # pack_50 expires after 30 days
    ("2026-02-03T09:00:00", _refund_pack_50),
    ("2026-02-07T12:00:00", _renew),  # the trial converts
    ("2026-02-12T10:00:00", _upgrade),  # trial plan -> pro, now
    ("2026-03-07T12:00:00", _renew),
    ("2026-03-10T08:00:00", _dispute_lost),  # the pack bought on Feb 1
    ("2026-03-21T10:00:00", _downgrade),  # pro -> basic at the period's end (Apr 7)
    ("2026-04-07T12:00:00", _renew),  # basic begins
    ("2026-04-10T10:00:00", _cancel_at_period_end),
    ("2026-05-07T12:00:00", _renew),  # ends
]


def outcome(world: StripeWorld, tenant: Tenant, name: str) -> dict[str, Any]:
    return customer_outcome(world.backend, world.http, tenant, name)


def test_events_in_order_once_or_shuffled_twice_give_the_same_access_and_ledger(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    # Bob in app A gets every event at once; carol in app B gets none until the end,
    # then each twice, shuffled. Both live through the same steps at the same times.
    _add_customer(world.http, world.b, "bob")
    in_order = Run(world, world.a, "bob", deliver_at_once=True)
    shuffled = Run(world, world.b, "bob", deliver_at_once=False)
    for at, step in SCENARIO:
        moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
        world.advance(seconds=(moment - world.clock.now).total_seconds())
        for run in (in_order, shuffled):
            step(run)
        world.advance(minutes=1)  # Stripe's events come a little later
        for run in (in_order, shuffled):
            run.collect()
    world.advance(days=1)
    deliveries = shuffled.pending * 2
    random.Random(4).shuffle(deliveries)
    signed_from = int(time.time())
    for index, event in enumerate(deliveries):
        # Stripe signs each delivery when it sends it: a redelivery has a later time.
        answer = world.deliver(event, world.b, timestamp=signed_from + index)
        assert answer.status_code == 200, (event["type"], answer.text)
    assert len(recorded_events(world, world.b)) == len(shuffled.pending)
    expected = outcome(world, world.a, "bob")
    assert outcome(world, world.b, "bob") == expected
    # And the outcome is the story told: the pack refunded and the pack disputed were
    # taken back at their instants, the plan changed twice and ended with its period.
    ledger = expected["ledger"]
    pack_50 = next(v for k, v in ledger.items() if k[0] == "pack_50")
    assert [(kind, amount) for kind, amount, _, _ in pack_50] == [("granted", 50), ("revoked", -50)]
    assert pack_50[1][3].replace(tzinfo=UTC) == datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
    pack_100 = next(v for k, v in ledger.items() if k[0] == "pack_100")
    assert [(kind, amount) for kind, amount, _, _ in pack_100] == [
        ("granted", 100),
        ("revoked", -100),
    ]
    assert pack_100[1][3].replace(tzinfo=UTC) == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    # The plan's grants: the trial plan's, pro's from the upgrade, basic's from Apr 7.
    plan_grants = sorted(k for k in ledger if k[0] == "basic" and k[1] == "stripe")
    assert [k[3].replace(tzinfo=UTC) for k in plan_grants] == [
        datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
        datetime(2026, 2, 12, 10, 0, tzinfo=UTC),
        datetime(2026, 4, 7, 12, 0, tzinfo=UTC),
    ]
    trial, pro, basic = (ledger[k] for k in plan_grants)
    assert [(kind, amount) for kind, amount, _, _ in trial] == [("granted", 200), ("expired", -200)]
    assert trial[1][3].replace(tzinfo=UTC) == datetime(2026, 2, 12, 10, 0, tzinfo=UTC)
    assert [(kind, amount) for kind, amount, _, _ in pro] == [
        ("granted", 1000),
        ("reset", 500),  # Mar 7: 1000 + min(500 carried, 1000 left)
        ("expired", -1500),  # Apr 7: the downgrade
    ]
    assert [(kind, amount) for kind, amount, _, _ in basic] == [("granted", 300)]
    live = [s["product_id"] for s in expected["subscriptions"] if s["provider"] == "stripe"]
    assert live == [], "the plan ended on May 7"
    plan = [s for s in expected["sources"] if s[2] == "subscription" and s[1] == "stripe"]
    assert [(p[0], p[3], p[5]) for p in plan] == [
        ("basic", "canceled", datetime(2026, 5, 7, 12, 0, tzinfo=UTC))
    ]
