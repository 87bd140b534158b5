"""Purchases through Stripe: what we send Stripe (through the library, intercepted at its
HTTP seam), what we answer the client, and the access that follows, on SQLite and
PostgreSQL. `revenipe verify` runs after each test (the `stripe_world` fixture).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..conftest import assert_error, ok
from ..test_purchases_sandbox import ATTACH, CANCEL, CHANGE, UNCANCEL
from .conftest import StripeWorld
from .fake_stripe import StripeFailure


def unix(text: str) -> str:
    return str(int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()))


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def metadata_of(form: dict[str, str], prefix: str = "metadata") -> dict[str, str]:
    start = f"{prefix}["
    return {
        k[len(start) : -1]: v
        for k, v in form.items()
        if k.startswith(start) and "][" not in k[len(start) :]
    }


def links(world: StripeWorld, name: str, product_id: str) -> dict[str, str]:
    """The metadata every object we create carries back to us."""
    return {
        "revenipe_app_id": world.a.app_id,
        "revenipe_customer_id": world.a.customers[name].client_id,
        "revenipe_product_id": product_id,
    }


def subscribe_by_checkout(world: StripeWorld, product_id: str, name: str = "alice") -> str:
    """Buy a plan through Stripe Checkout, Stripe's side completed, events delivered:
    the access source's id."""
    session = ok(world.start(name, product_id=product_id, purchase_method="hosted_checkout"))
    world.deliver_all(world.fake.complete_checkout(session["checkout"]["session_id"]))
    (source,) = [s for s in world.stripe_sources(name) if s["product_id"] == product_id]
    return str(source["access_source_id"])


def direct_trial(world: StripeWorld, name: str = "alice") -> dict[str, Any]:
    """A trial started at once, with no payment UI."""
    return dict(
        ok(
            world.start(
                name,
                product_id="trial_plan",
                purchase_method="payment_sheet",
                trial_payment_method_behavior="direct",
            )
        )
    )


def test_a_pack_bought_through_checkout_is_granted_when_stripe_confirms(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    before = world.credits()
    started = ok(
        world.start(
            product_id="pack_50",
            purchase_method="hosted_checkout",
            success_url="https://app.example/thanks",
            cancel_url="https://app.example/back",
            extra_params={"campaign": "spring"},
        )
    )
    customer = world.fake.last("POST", "/v1/customers")
    alice = world.a.customers["alice"].client_id
    assert metadata_of(customer.form) == {
        "revenipe_app_id": world.a.app_id,
        "revenipe_customer_id": alice,
    }
    assert customer.idempotency_key == f"revenipe:{world.a.app_id}:customer:{alice}"
    assert customer.account == world.account(world.a).secret_key
    session = world.fake.last("POST", "/v1/checkout/sessions")
    stripe_customer = world.fake.objects[session.params["customer"]]
    assert stripe_customer["metadata"]["revenipe_customer_id"] == alice
    assert session.params["mode"] == "payment"
    assert session.params["client_reference_id"] == alice
    assert session.params["success_url"] == "https://app.example/thanks"
    assert session.params["cancel_url"] == "https://app.example/back"
    (line,) = session.params["line_items"]
    assert line["quantity"] == "1"
    assert line["price_data"]["unit_amount"] == "500" and line["price_data"]["currency"] == "usd"
    assert line["price_data"]["product_data"]["name"] == "50 credits"
    expected = {**links(world, "alice", "pack_50"), "campaign": "spring"}
    assert session.params["metadata"] == expected
    assert session.params["payment_intent_data"]["metadata"] == expected
    assert session.idempotency_key is not None
    assert session.idempotency_key.startswith(f"revenipe:{world.a.app_id}:checkout:")
    assert started["checkout"] == {
        "session_id": world.fake.objects[started["checkout"]["session_id"]]["id"],
        "checkout_url": world.fake.objects[started["checkout"]["session_id"]]["url"],
    }
    assert world.credits() == before, "nothing is granted before Stripe confirms the payment"
    events = world.fake.complete_checkout(started["checkout"]["session_id"])
    world.deliver_all(events)
    assert world.credits() == before + 50
    (source,) = world.rows()
    assert (source.product_id, source.kind, source.status) == ("pack_50", "purchase", "active")
    intent = world.fake.objects[
        world.fake.objects[started["checkout"]["session_id"]]["payment_intent"]
    ]
    assert source.provider_ref == intent["id"]
    # The next purchase reuses the Stripe customer.
    ok(world.start(product_id="pack_50", purchase_method="hosted_checkout"))
    assert len(world.fake.sent("POST", "/v1/customers")) == 1


def test_a_pack_on_a_payment_sheet_uses_its_stripe_price_and_an_ephemeral_key(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    before = world.credits()
    sheet = ok(world.start(product_id="pack_100", purchase_method="payment_sheet"))
    assert set(sheet) == {"purchase_method", "product_id", "product_type", "payment_sheet"}
    assert world.fake.last("GET", "/v1/prices/price_pack100")
    intent_request = world.fake.last("POST", "/v1/payment_intents")
    customer_id = intent_request.params["customer"]
    assert intent_request.params["amount"] == "900" and intent_request.params["currency"] == "usd"
    assert intent_request.params["metadata"] == links(world, "alice", "pack_100")
    key = world.fake.last("POST", "/v1/ephemeral_keys")
    assert key.params == {"customer": customer_id}
    assert key.headers["Stripe-Version"]
    (intent_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "payment_intent"]
    assert sheet["payment_sheet"] == {
        "customer_id": customer_id,
        "customer_ephemeral_key_secret": sheet["payment_sheet"]["customer_ephemeral_key_secret"],
        "payment_intent_client_secret": world.fake.objects[intent_id]["client_secret"],
    }
    assert sheet["payment_sheet"]["customer_ephemeral_key_secret"].startswith("ek_test_")
    assert world.credits() == before
    world.deliver(world.fake.pay_intent(intent_id))
    assert world.credits() == before + 100


def test_a_plan_bought_through_checkout_renews_with_each_invoice(stripe_world: StripeWorld) -> None:
    world = stripe_world
    session = ok(world.start(product_id="pro", purchase_method="hosted_checkout"))
    sent = world.fake.last("POST", "/v1/checkout/sessions")
    assert sent.params["mode"] == "subscription"
    assert sent.params["line_items"] == [{"price": "price_pro", "quantity": "1"}]
    reserved = sent.params["subscription_data"]["metadata"]["revenipe_source_id"]
    assert sent.params["subscription_data"]["metadata"] == {
        **links(world, "alice", "pro"),
        "revenipe_source_id": reserved,
    }
    # Without a success_url, Checkout returns to our own page.
    assert sent.params["success_url"].endswith(
        "/v1/stripe/checkout/complete?session_id={CHECKOUT_SESSION_ID}"
    )
    page = world.http.get("/v1/stripe/checkout/complete", params={"session_id": "cs_x"})
    assert page.status_code == 200 and "close" in page.text
    world.deliver_all(world.fake.complete_checkout(session["checkout"]["session_id"]))
    sub = world.subscription(reserved)
    assert sub is not None, "the source has the id reserved when the purchase started"
    assert (sub["status"], sub["provider"], sub["renews_at"]) == (
        "active",
        "stripe",
        "2026-02-28T12:00:00Z",
    )
    assert world.credits() == 100 + 1000
    world.track(600)
    world.advance(days=28, minutes=1)
    sub_id = world.fake.objects[session["checkout"]["session_id"]]["subscription"]
    world.deliver_all(world.fake.renew(sub_id))
    sub = world.subscription(reserved)
    assert sub is not None and sub["renews_at"] == "2026-03-31T12:00:00Z"
    # Pro refilled, carrying its 400 left (rollover max 500); the free tier refilled too.
    assert world.credits() == 100 + 1000 + 400


def test_a_plan_on_a_payment_sheet_waits_for_its_first_invoice(stripe_world: StripeWorld) -> None:
    world = stripe_world
    sheet = ok(world.start(product_id="basic", purchase_method="payment_sheet"))["payment_sheet"]
    sent = world.fake.last("POST", "/v1/subscriptions")
    assert sent.params["payment_behavior"] == "default_incomplete"
    assert sent.params["items"] == [{"price": "price_basic"}]
    assert sent.params["payment_settings"] == {"save_default_payment_method": "on_subscription"}
    assert "latest_invoice.confirmation_secret" in sent.params["expand"]
    reserved = sent.params["metadata"]["revenipe_source_id"]
    assert sheet["subscription_id"] == reserved
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    invoice = world.fake.objects[world.fake.objects[sub_id]["latest_invoice"]]
    assert sheet["payment_intent_client_secret"] == invoice["confirmation_secret"]["client_secret"]
    assert world.stripe_sources() == [], "incomplete: no access before the payment"
    assert world.credits() == 100
    world.deliver_all(world.fake.pay_first_invoice(sub_id))
    sub = world.subscription(reserved)
    assert sub is not None and sub["status"] == "active" and sub["product_id"] == "basic"
    assert sub["payment_method_attached"] is True
    assert world.credits() == 100 + 300


def test_a_direct_trial_starts_at_once_and_ends_without_a_payment_method(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    started = direct_trial(world)
    sent = world.fake.last("POST", "/v1/subscriptions")
    assert sent.params["trial_period_days"] == "7"
    assert sent.params["trial_settings"] == {"end_behavior": {"missing_payment_method": "cancel"}}
    direct = started["subscription"]
    assert direct["status"] == "trialing" and direct["trial_end"] == "2026-02-07T12:00:00Z"
    assert direct["subscription_id"] == sent.params["metadata"]["revenipe_source_id"]
    sub = world.subscription(direct["subscription_id"])
    assert sub is not None and sub["is_trial"] is True and sub["payment_method_attached"] is False
    assert world.credits() == 100 + 200, "a trial gives access before any webhook"
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    world.advance(days=7, minutes=1)
    world.deliver_all(world.fake.renew(sub_id))
    assert world.subscription(direct["subscription_id"]) is None
    assert world.credits() == 100


def test_a_trial_with_a_setup_intent_converts_when_the_card_is_saved(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    started = ok(
        world.start(
            product_id="trial_plan",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="setup_intent",
        )
    )
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    intent_id = world.fake.objects[sub_id]["pending_setup_intent"]
    setup = started["setup"]
    assert setup["setup_intent_id"] == intent_id
    assert setup["setup_intent_client_secret"] == world.fake.objects[intent_id]["client_secret"]
    assert setup["customer_id"] == world.fake.objects[sub_id]["customer"]
    assert setup["ephemeral_key"].startswith("ek_test_")
    (source,) = world.stripe_sources()
    assert source["payment_method_attached"] is False
    world.deliver(world.fake.confirm_setup_intent(intent_id))
    world.deliver(world.fake.event("customer.subscription.updated", world.fake.objects[sub_id]))
    assert world.subscription(source["access_source_id"])["payment_method_attached"] is True
    world.advance(days=7, minutes=1)
    world.deliver_all(world.fake.renew(sub_id))
    sub = world.subscription(source["access_source_id"])
    assert (
        sub is not None and sub["status"] == "active" and sub["renews_at"] == "2026-03-07T12:00:00Z"
    )
    # A payment sheet without a behavior gets the same setup intent's secret.
    other = ok(world.start("bob", product_id="trial_plan", purchase_method="payment_sheet"))[
        "payment_sheet"
    ]
    assert other["setup_intent_client_secret"].startswith("seti_")
    assert other["subscription_id"].startswith("src_")


def test_cancel_uncancel_and_cancel_now_go_through_stripe(stripe_world: StripeWorld) -> None:
    world = stripe_world
    source = subscribe_by_checkout(world, "pro")
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    canceled = ok(world.call(CANCEL, source_id=source, cancel_mode="period_end"))
    assert (
        world.fake.last("POST", f"/v1/subscriptions/{sub_id}").params["cancel_at_period_end"]
        == "true"
    )
    assert canceled == {
        "success": True,
        "status": "active",
        "will_cancel_at_period_end": True,
        "cancels_at": "2026-02-28T12:00:00Z",
        "message": canceled["message"],
    }
    sub = world.subscription(source)
    assert (
        sub is not None and sub["will_cancel_at_period_end"] is True and sub["can_cancel"] is False
    )
    assert ok(world.call(UNCANCEL, source_id=source)) == {"success": True}
    assert (
        world.fake.last("POST", f"/v1/subscriptions/{sub_id}").params["cancel_at_period_end"]
        == "false"
    )
    sub = world.subscription(source)
    assert sub is not None and sub["will_cancel_at_period_end"] is False
    world.track(200)
    now = ok(world.call(CANCEL, source_id=source, cancel_mode="immediately"))
    assert world.fake.last("DELETE", f"/v1/subscriptions/{sub_id}")
    assert now["status"] == "canceled" and now["will_cancel_at_period_end"] is False
    assert world.subscription(source) is None
    assert world.credits() == 100, "the rest of the period's credits ended with it"
    assert_error(world.call(UNCANCEL, source_id=source), 409, "subscription_not_active")


def test_an_upgrade_applies_now_with_stripes_proration(stripe_world: StripeWorld) -> None:
    world = stripe_world
    source = subscribe_by_checkout(world, "basic")
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    world.advance(days=3)
    world.track(100)
    change = ok(world.call(CHANGE, source_id=source, new_product_id="pro"))
    assert (change["change_type"], change["billing_mode"], change["status"]) == (
        "upgrade",
        "immediate",
        "access_applied",
    )
    sent = world.fake.last("POST", f"/v1/subscriptions/{sub_id}")
    item_id = world.fake.objects[sub_id]["items"]["data"][0]["id"]
    assert sent.params["items"] == [{"id": item_id, "price": "price_pro"}]
    assert sent.params["proration_behavior"] == "always_invoice"
    assert sent.params["proration_date"] == unix("2026-02-03T12:00:00Z")
    assert sent.params["metadata"] == {
        "revenipe_product_id": "pro",
        "revenipe_plan_changes": f"basic>pro@{unix('2026-02-03T12:00:00Z')}",
    }
    sub = world.subscription(source)
    assert sub is not None and sub["product_id"] == "pro"
    assert sub["renews_at"] == "2026-02-28T12:00:00Z", "the billing cycle is kept"
    assert world.credits() == 100 + 1000, "basic's 200 left ended; pro's 1000 began"
    # The webhook of that update changes nothing more.
    before = world.state()
    world.deliver(world.fake.events[-1])
    assert world.state() == before


def test_a_downgrade_waits_for_the_period_end_through_a_schedule(stripe_world: StripeWorld) -> None:
    world = stripe_world
    source = subscribe_by_checkout(world, "pro")
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    change = ok(world.call(CHANGE, source_id=source, new_product_id="basic"))
    assert (change["change_type"], change["billing_mode"], change["status"]) == (
        "downgrade",
        "period_end",
        "pending",
    )
    assert change["effective_at"] == "2026-02-28T12:00:00Z"
    created = world.fake.last("POST", "/v1/subscription_schedules")
    assert created.params == {"from_subscription": sub_id}
    schedule_id = world.fake.objects[sub_id]["schedule"]
    phases = world.fake.last("POST", f"/v1/subscription_schedules/{schedule_id}").params["phases"]
    assert phases[0]["items"] == [{"price": "price_pro", "quantity": "1"}]
    assert phases[0]["end_date"] == unix("2026-02-28T12:00:00Z")
    assert phases[1]["items"] == [{"price": "price_basic", "quantity": "1"}]
    assert phases[1]["metadata"] == {
        "revenipe_product_id": "basic",
        "revenipe_plan_changes": f"pro>basic@{unix('2026-02-28T12:00:00Z')}",
    }
    sub = world.subscription(source)
    assert sub is not None and sub["product_id"] == "pro"
    assert sub["pending_change"] == {
        "change_id": schedule_id,
        "type": "downgrade",
        "billing_mode": "period_end",
        "status": "pending",
        "from_product_id": "pro",
        "to_product_id": "basic",
        "effective_at": "2026-02-28T12:00:00Z",
    }
    assert world.credits() == 100 + 1000
    world.advance(days=28, minutes=5)
    world.deliver_all(world.fake.renew(sub_id))
    sub = world.subscription(source)
    assert sub is not None and sub["product_id"] == "basic" and sub["pending_change"] is None
    assert world.credits() == 100 + 300, "pro ended with its period; basic began then"


def test_asking_for_the_current_plan_drops_a_scheduled_downgrade(stripe_world: StripeWorld) -> None:
    world = stripe_world
    source = subscribe_by_checkout(world, "pro")
    ok(world.call(CHANGE, source_id=source, new_product_id="basic"))
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    schedule_id = world.fake.objects[sub_id]["schedule"]
    dropped = ok(world.call(CHANGE, source_id=source, new_product_id="pro"))
    assert dropped["status"] == "canceled"
    assert world.fake.last("POST", f"/v1/subscription_schedules/{schedule_id}/release")
    sub = world.subscription(source)
    assert sub is not None and sub["pending_change"] is None
    # Canceling releases a schedule first (Stripe refuses it otherwise).
    ok(world.call(CHANGE, source_id=source, new_product_id="basic"))
    ok(world.call(CANCEL, source_id=source, cancel_mode="period_end"))
    sub = world.subscription(source)
    assert sub is not None and sub["pending_change"] is None and sub["will_cancel_at_period_end"]


def test_a_payment_method_attached_by_setup_intent_or_checkout_becomes_the_default(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    source = direct_trial(world)["subscription"]["subscription_id"]
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    attach = ok(world.call(ATTACH, access_source_id=source, mode="payment_sheet"))
    sent = world.fake.last("POST", "/v1/setup_intents")
    assert sent.params["metadata"] == {
        **links(world, "alice", "trial_plan"),
        "revenipe_source_id": source,
        "revenipe_subscription_id": sub_id,
    }
    assert sent.params["usage"] == "off_session"
    intent_id = attach["payment_sheet"]["setup_intent_client_secret"].split("_secret_")[0]
    world.deliver(world.fake.confirm_setup_intent(intent_id))
    update = world.fake.last("POST", f"/v1/subscriptions/{sub_id}")
    assert update.params == {"default_payment_method": "pm_card_visa", "expand": ["schedule"]}
    assert world.subscription(source)["payment_method_attached"] is True
    # Through Checkout in setup mode, on another customer's trial.
    other = direct_trial(world, "bob")["subscription"]["subscription_id"]
    checkout = ok(
        world.call(
            ATTACH,
            "bob",
            access_source_id=other,
            mode="hosted_checkout",
            success_url="https://app.example/saved",
        )
    )
    session = world.fake.last("POST", "/v1/checkout/sessions")
    assert session.params["mode"] == "setup" and session.params["currency"] == "usd"
    assert session.params["setup_intent_data"]["metadata"]["revenipe_source_id"] == other
    assert checkout["checkout"]["checkout_url"].startswith("https://checkout.stripe.com/")
    world.deliver_all(world.fake.complete_checkout(checkout["checkout"]["session_id"]))
    sub = next(s for s in world.state("bob")["subscriptions"] if s["access_source_id"] == other)
    assert sub["payment_method_attached"] is True


def test_what_stripe_cannot_sell_is_refused_before_calling_it(stripe_world: StripeWorld) -> None:
    world = stripe_world
    cases = [
        # price_data cannot make a subscription through the API: a Stripe Price is needed.
        ({"product_id": "studio", "purchase_method": "payment_sheet"}, "product_not_purchasable"),
        # A gift with no price cannot be sold at all.
        (
            {"product_id": "welcome", "purchase_method": "hosted_checkout"},
            "product_not_purchasable",
        ),
        ({"product_id": "free", "purchase_method": "hosted_checkout"}, "product_not_purchasable"),
        (
            {
                "product_id": "pack_50",
                "purchase_method": "hosted_checkout",
                "extra_params": {"revenipe_app_id": "other"},
            },
            "invalid_argument",
        ),
    ]
    for body, code in cases:
        assert_error(world.start(**body), (400, 409), code)
    assert world.fake.requests == []
    # The same studio plan sells through hosted checkout with price_data.
    ok(world.start(product_id="studio", purchase_method="hosted_checkout"))
    line = world.fake.last("POST", "/v1/checkout/sessions").params["line_items"][0]
    assert line["price_data"]["recurring"] == {"interval": "month"}
    assert line["price_data"]["currency"] == "eur" and line["price_data"]["unit_amount"] == "700"


def test_stripe_failures_are_answered_502_and_change_nothing(stripe_world: StripeWorld) -> None:
    world = stripe_world
    world.fake.failures.append(StripeFailure(402, "Your card was declined.", "card_error"))
    answer = world.start(product_id="pack_50", purchase_method="payment_sheet")
    body = assert_error(answer, 502, "provider_error")
    assert "declined" in body["message"]
    world.fake.failures.append(
        StripeFailure(401, "Invalid API Key provided", "invalid_request_error")
    )
    assert_error(
        world.start(product_id="pack_50", purchase_method="hosted_checkout"), 502, "provider_error"
    )
    assert world.rows() == []


def test_no_customer_can_buy_cancel_or_change_for_another(stripe_world: StripeWorld) -> None:
    world = stripe_world
    source = subscribe_by_checkout(world, "pro")
    (sub_id,) = [i for i, o in world.fake.objects.items() if o.get("object") == "subscription"]
    stripe_side = json.dumps(world.fake.objects[sub_id], sort_keys=True)
    alice_before = world.state("alice")
    sent_before = len(world.fake.requests)
    alice_id = world.a.customers["alice"].client_id
    bob = world.a.as_customer("bob")
    # Bob's own client id, alice's source: answered as a source that does not exist.
    for path, body in (
        (CANCEL, {"source_id": source, "cancel_mode": "immediately"}),
        (UNCANCEL, {"source_id": source}),
        (CHANGE, {"source_id": source, "new_product_id": "basic"}),
        (ATTACH, {"access_source_id": source, "mode": "payment_sheet"}),
    ):
        assert_error(world.call(path, "bob", **body), 404, "access_source_not_found")
        # Naming alice with bob's token: refused before anything is looked up.
        answer = world.http.post(path, json={"client_id": alice_id, **body}, headers=bob)
        assert_error(answer, 403, "forbidden")
        # Carol, in app B, naming alice's source with her own id and token.
        assert_error(world.call(path, "carol", world.b, **body), 404, "access_source_not_found")
    bought_for_alice = world.http.post(
        "/v1/customer/purchase/start_purchase",
        json={
            "customer_id": alice_id,
            "product_id": "pack_50",
            "purchase_method": "hosted_checkout",
        },
        headers=bob,
    )
    assert_error(bought_for_alice, 403, "forbidden")
    assert len(world.fake.requests) == sent_before, "nothing reached Stripe"
    assert json.dumps(world.fake.objects[sub_id], sort_keys=True) == stripe_side
    assert world.state("alice") == alice_before
