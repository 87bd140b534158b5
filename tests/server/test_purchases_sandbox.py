"""Purchases through the sandbox provider, over HTTP in-process, on SQLite and PostgreSQL.

The world's apps are sandbox apps (see conftest). Every flow goes through the client
protocol's purchase endpoints and the sandbox's own pages and confirm calls, moves the
app's test clock with the server API, and checks balances, sources and the ledger
invariants.
"""

from __future__ import annotations

import threading
from typing import Any

from .conftest import Tenant, TestClient, World, assert_error, ok, subscribe
from support import assert_verified

START = "/v1/customer/purchase/start_purchase"
CANCEL = "/v1/customer/purchase/subscription/cancel"
UNCANCEL = "/v1/customer/purchase/subscription/uncancel"
CHANGE = "/v1/customer/purchase/subscription/change_plan"
ATTACH = "/v1/customer/purchase/subscriptions/attach/payment_method"
TRACK = "/v1/customer/track"
TRIAL_CATALOG_PRODUCT = {
    "id": "trial_plan",
    "name": "Trial plan",
    "type": "subscription",
    "recurring_interval": "month",
    "price": 800,
    "trial": "P7D",
    "grants": [{"entitlement": "monthly_credits", "amount": 200, "reset": "period"}],
}


def advance(world: World, tenant: Tenant, **amount: int) -> dict[str, Any]:
    return dict(ok(world.http.post("/v1/sandbox/clock/advance", json=amount, headers=tenant.api())))


def state(world: World, tenant: Tenant, name: str) -> dict[str, Any]:
    return dict(ok(world.http.get(f"/v1/customers/{name}", headers=tenant.api())))


def credits(world: World, name: str = "alice") -> int:
    (key,) = (k for k in state(world, world.a, name)["usage_keys"] if k["key_id"] == "credits")
    return int(key["remaining"])


def subscription(world: World, source_id: str, name: str = "alice") -> dict[str, Any] | None:
    found = [
        s
        for s in state(world, world.a, name)["subscriptions"]
        if s["access_source_id"] == source_id
    ]
    return found[0] if found else None


def start(world: World, name: str = "alice", **body: Any) -> Any:
    customer = world.a.customers[name]
    return world.http.post(
        START,
        json={"customer_id": customer.client_id, **body},
        headers=world.a.as_customer(name),
    )


def call(world: World, path: str, name: str = "alice", **body: Any) -> Any:
    customer = world.a.customers[name]
    return world.http.post(
        path, json={"client_id": customer.client_id, **body}, headers=world.a.as_customer(name)
    )


def track(world: World, value: int, name: str = "alice", **extra: Any) -> dict[str, Any]:
    body = {"entitlement_id": "credits", "value": value, "access_source_id": None, **extra}
    return dict(ok(call(world, TRACK, name, **body)))


def add_trial_product(world: World) -> None:
    catalog = ok(world.http.get("/v1/catalog", headers=world.a.api()))["catalog"]
    catalog["products"].append(TRIAL_CATALOG_PRODUCT)
    ok(world.http.put("/v1/catalog", json=catalog, headers=world.a.api()))


def test_a_pack_bought_at_the_checkout_page_feeds_the_usage_key(world: World) -> None:
    before = credits(world)  # free 100 + welcome 10 + pack_50 granted by the app
    started = ok(start(world, product_id="pack_50", purchase_method="hosted_checkout"))
    assert started["product_type"] == "one_time" and set(started) == {
        "purchase_method",
        "product_id",
        "product_type",
        "checkout",
    }
    url = started["checkout"]["checkout_url"]
    assert credits(world) == before, "nothing is granted before the payment"
    page = world.http.get(url)
    assert page.status_code == 200 and "5.00 USD" in page.text
    done = world.http.post(f"{url}/pay", follow_redirects=False)
    assert done.status_code == 200 and "complete" in done.text
    assert credits(world) == before + 50
    # The pay button pressed twice (a double click, a reload) buys once.
    assert world.http.post(f"{url}/pay", follow_redirects=False).status_code == 200
    assert credits(world) == before + 50
    # Cancelling after paying is refused; the page says it is complete.
    assert world.http.post(f"{url}/cancel").status_code == 409
    assert "complete" in world.http.get(url).text
    assert_verified(world.backend)


def test_checkout_redirects_to_the_success_and_cancel_urls(world: World) -> None:
    started = ok(
        start(
            world,
            product_id="pack_50",
            purchase_method="hosted_checkout",
            success_url="https://app.example/thanks?session={CHECKOUT_SESSION_ID}",
            cancel_url="https://app.example/cancelled",
        )
    )
    session, url = started["checkout"]["session_id"], started["checkout"]["checkout_url"]
    paid = world.http.post(f"{url}/pay", follow_redirects=False)
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://app.example/thanks?session={session}"
    other = ok(
        start(
            world,
            product_id="pack_50",
            purchase_method="hosted_checkout",
            cancel_url="https://app.example/cancelled",
        )
    )["checkout"]["checkout_url"]
    before = credits(world)
    canceled = world.http.post(f"{other}/cancel", follow_redirects=False)
    assert canceled.status_code == 303 and canceled.headers["location"].endswith("/cancelled")
    assert world.http.post(f"{other}/pay").status_code == 409
    assert credits(world) == before


def test_bad_purchase_requests_are_refused_with_codes(world: World) -> None:
    cases = [
        ({"product_id": "nope", "purchase_method": "hosted_checkout"}, 404, "product_not_found"),
        (
            {"product_id": "free", "purchase_method": "hosted_checkout"},
            409,
            "product_not_purchasable",
        ),
        (
            {
                "product_id": "pack_50",
                "purchase_method": "hosted_checkout",
                "success_url": "javascript:alert(1)",
            },
            400,
            "invalid_argument",
        ),
        ({"product_id": "pack_50", "purchase_method": "cash"}, 400, None),
    ]
    for body, status, code in cases:
        assert_error(start(world, **body), status, code)
    assert world.http.get("/v1/sandbox/checkout/cs_sbx_" + "0" * 32).status_code == 404
    assert world.http.post("/v1/sandbox/checkout/cs_sbx_" + "0" * 32 + "/pay").status_code == 409


def test_subscription_renews_refills_with_rollover_then_cancels_at_period_end(
    world: World,
) -> None:
    source = subscribe(world.http, world.a, "alice", "pro")
    sub = subscription(world, source)
    assert sub is not None and sub["status"] == "active" and sub["can_cancel"] is True
    assert sub["provider"] == "sandbox" and sub["renews_at"] == "2026-02-28T12:00:00Z"
    assert credits(world) == 160 + 1000
    # A second plan while one is live is refused: change plan instead.
    assert_error(
        start(world, product_id="basic", purchase_method="hosted_checkout"),
        409,
        "subscription_exists",
    )
    # Within monthly_credits the soonest expiry pays first: pro's (its period ends), then
    # the free tier's; the welcome bonus (10) and the pack (50) are left.
    assert track(world, 1100)["remaining"] == 60
    advance(world, world.a, days=29)  # Mar 1: past the renewal of Feb 28
    sub = subscription(world, source)
    assert sub is not None and sub["renews_at"] == "2026-03-31T12:00:00Z"
    # Pro refilled to 1000 (nothing left to carry), the free tier to 100.
    assert credits(world) == 1000 + 100 + 60
    assert track(world, 500)["remaining"] == 660  # all from pro, which has 500 left
    advance(world, world.a, days=31)  # Apr 1: past Mar 31; the pack expired on Mar 2
    # Pro carries its 500 left (the rollover max) on top of its 1000.
    assert credits(world) == 1500 + 100 + 10
    cancel = ok(call(world, CANCEL, source_id=source, cancel_mode="period_end"))
    assert cancel == {
        "success": True,
        "status": "active",
        "will_cancel_at_period_end": True,
        "cancels_at": "2026-04-30T12:00:00Z",
        "message": cancel["message"],
    }
    sub = subscription(world, source)
    assert sub is not None and sub["will_cancel_at_period_end"] is True
    assert sub["renews_at"] is None and sub["expires_at"] == "2026-04-30T12:00:00Z"
    assert sub["can_cancel"] is False
    advance(world, world.a, days=31)
    assert subscription(world, source) is None, "access ended with the period"
    assert credits(world) == 100 + 10
    result = track(world, 1, access_source_id=source)
    assert result["success"] is False and result["error"] == "access_expired"
    assert_error(call(world, UNCANCEL, source_id=source), 409, "subscription_not_active")
    assert_verified(world.backend)


def test_uncancel_keeps_it_renewing(world: World) -> None:
    source = subscribe(world.http, world.a, "alice", "pro")
    ok(call(world, CANCEL, source_id=source, cancel_mode="period_end"))
    assert ok(call(world, UNCANCEL, source_id=source)) == {"success": True}
    advance(world, world.a, days=40)
    sub = subscription(world, source)
    assert (
        sub is not None and sub["status"] == "active" and sub["renews_at"] == "2026-03-31T12:00:00Z"
    )
    assert_verified(world.backend)


def test_cancel_immediately_takes_the_rest_of_the_period_away(world: World) -> None:
    source = subscribe(world.http, world.a, "alice", "pro")
    track(world, 200)
    outcome = ok(call(world, CANCEL, source_id=source, cancel_mode="immediately"))
    assert outcome["status"] == "canceled" and outcome["will_cancel_at_period_end"] is False
    assert subscription(world, source) is None
    # Pro paid the 200 (its credits expire soonest); its other 800 are written off now.
    assert credits(world) == 160
    ledger = ok(world.http.get("/v1/ledger", headers=world.a.api()))["entries"]
    assert any(e["kind"] == "expired" and e["amount"] == -800 for e in ledger), ledger
    assert_verified(world.backend)


def test_a_downgrade_waits_for_the_period_end_then_grants_the_new_plan(world: World) -> None:
    source = subscribe(world.http, world.a, "alice", "pro")
    change = ok(call(world, CHANGE, source_id=source, new_product_id="basic"))
    assert (change["change_type"], change["billing_mode"], change["status"]) == (
        "downgrade",
        "period_end",
        "pending",
    )
    assert change["effective_at"] == "2026-02-28T12:00:00Z"
    sub = subscription(world, source)
    assert sub is not None and sub["product_id"] == "pro"
    assert sub["pending_change"]["to_product_id"] == "basic"
    assert credits(world) == 160 + 1000
    advance(world, world.a, days=29)  # Mar 1, past Feb 28 (and before the pack expires)
    sub = subscription(world, source)
    assert sub is not None and sub["product_id"] == "basic" and sub["pending_change"] is None
    # Pro's 1000 ended with the period; basic's 300 began then (the free tier refilled).
    assert credits(world) == 160 + 300
    assert_verified(world.backend)


def test_an_upgrade_applies_at_once(world: World) -> None:
    source = subscribe(world.http, world.a, "alice", "basic")
    track(world, 150)  # from basic, whose credits expire with its period
    change = ok(call(world, CHANGE, source_id=source, new_product_id="pro"))
    assert (change["change_type"], change["status"]) == ("upgrade", "access_applied")
    sub = subscription(world, source)
    assert sub is not None and sub["product_id"] == "pro"
    assert sub["renews_at"] == "2026-02-28T12:00:00Z", "the billing cycle is kept"
    assert credits(world) == 160 + 1000, "basic's 150 left ended; pro's 1000 began"
    # The same product again, or a pack, is not a plan change.
    assert_error(
        call(world, CHANGE, source_id=source, new_product_id="pro"), 409, "plan_change_not_allowed"
    )
    assert_error(
        call(world, CHANGE, source_id=source, new_product_id="pack_50"),
        409,
        "plan_change_not_allowed",
    )
    assert_verified(world.backend)


def test_a_direct_trial_without_a_payment_method_ends_with_the_trial(world: World) -> None:
    add_trial_product(world)
    started = ok(
        start(
            world,
            product_id="trial_plan",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="direct",
        )
    )
    direct = started["subscription"]
    assert direct["status"] == "trialing" and direct["trial_end"] == "2026-02-07T12:00:00Z"
    sub = subscription(world, direct["subscription_id"])
    assert sub is not None and sub["is_trial"] is True and sub["payment_method_attached"] is False
    assert credits(world) == 160 + 200
    advance(world, world.a, days=8)
    assert subscription(world, direct["subscription_id"]) is None
    assert credits(world) == 160
    assert_verified(world.backend)


def test_a_trial_with_a_payment_method_converts_and_refills(world: World) -> None:
    add_trial_product(world)
    started = ok(
        start(
            world,
            product_id="trial_plan",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="direct",
        )
    )
    source = started["subscription"]["subscription_id"]
    attach = ok(call(world, ATTACH, access_source_id=source, mode="payment_sheet"))
    secret = attach["payment_sheet"]["setup_intent_client_secret"]
    intent = secret.split("_secret_")[0]
    wrong = world.http.post(
        f"/v1/sandbox/setup_intents/{intent}/confirm", json={"client_secret": secret + "x"}
    )
    assert_error(wrong, 404, "checkout_not_found")
    confirmed = ok(
        world.http.post(
            f"/v1/sandbox/setup_intents/{intent}/confirm", json={"client_secret": secret}
        )
    )
    assert confirmed["status"] == "succeeded" and confirmed["access_source_id"] == source
    sub = subscription(world, source)
    assert sub is not None and sub["payment_method_attached"] is True
    track(world, 150)  # from the trial's 200, which expire soonest
    advance(world, world.a, days=8)
    sub = subscription(world, source)
    assert sub is not None and sub["status"] == "active" and sub["is_trial"] is False
    assert sub["renews_at"] == "2026-03-07T12:00:00Z"
    assert credits(world) == 160 + 200, "the trial's credits refilled at its end"
    assert_verified(world.backend)


def test_a_payment_sheet_purchase_completes_on_confirm_and_a_decline_grants_nothing(
    world: World,
) -> None:
    before = credits(world)
    sheet = ok(start(world, product_id="pack_50", purchase_method="payment_sheet"))["payment_sheet"]
    assert sheet["customer_id"] == world.a.customers["alice"].client_id
    assert sheet["customer_ephemeral_key_secret"].startswith("ek_sbx_")
    secret = sheet["payment_intent_client_secret"]
    intent = secret.split("_secret_")[0]
    declined = ok(
        world.http.post(
            f"/v1/sandbox/payment_intents/{intent}/confirm",
            json={"client_secret": secret, "outcome": "declined"},
        )
    )
    assert declined["status"] == "requires_payment_method" and credits(world) == before
    sheet = ok(start(world, product_id="pack_50", purchase_method="payment_sheet"))["payment_sheet"]
    secret = sheet["payment_intent_client_secret"]
    intent = secret.split("_secret_")[0]
    for _ in range(2):
        confirmed = world.http.post(
            f"/v1/sandbox/payment_intents/{intent}/confirm", json={"client_secret": secret}
        )
        assert ok(confirmed)["status"] == "succeeded"
    assert credits(world) == before + 50
    # A subscription on a payment sheet gets its subscription id up front.
    sheet = ok(start(world, product_id="pro", purchase_method="payment_sheet"))["payment_sheet"]
    secret = sheet["payment_intent_client_secret"]
    ok(
        world.http.post(
            f"/v1/sandbox/payment_intents/{secret.split('_secret_')[0]}/confirm",
            json={"client_secret": secret},
        )
    )
    sub = subscription(world, sheet["subscription_id"])
    assert sub is not None and sub["product_id"] == "pro"
    assert_verified(world.backend)


def test_two_checkouts_of_a_plan_paid_at_once_give_one_subscription(world: World) -> None:
    urls = [
        ok(start(world, product_id="pro", purchase_method="hosted_checkout"))["checkout"][
            "checkout_url"
        ]
        for _ in range(2)
    ]
    answers: list[int] = []

    def pay(url: str, http: TestClient) -> None:
        answers.append(http.post(f"{url}/pay").status_code)

    threads = [threading.Thread(target=pay, args=(url, world.http)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 409], answers
    subs = [
        s for s in state(world, world.a, "alice")["subscriptions"] if s["provider"] == "sandbox"
    ]
    assert len(subs) == 1
    assert_verified(world.backend)


def test_the_test_clock_is_for_sandbox_apps_and_only_moves_forward(
    world: World, backend: Any
) -> None:
    clock = ok(world.http.get("/v1/sandbox/clock", headers=world.a.api()))
    assert clock["clock_offset_seconds"] == 0
    moved = advance(world, world.a, days=1, hours=2)
    assert moved["clock_offset_seconds"] == 26 * 3600
    for body in ({"days": -1}, {"days": 0}, {"hours": 1.5}, {"days": "1"}, {"weeks": 1}):
        assert_error(
            world.http.post("/v1/sandbox/clock/advance", json=body, headers=world.a.api()), 400
        )
    # Moving one app's clock moves no other app's.
    assert (
        ok(world.http.get("/v1/sandbox/clock", headers=world.b.api()))["clock_offset_seconds"] == 0
    )
    live = backend.create_app("live app")
    headers = {"Authorization": f"Bearer {live.secret_key}"}
    response = world.http.post("/v1/sandbox/clock/advance", json={"days": 1}, headers=headers)
    assert_error(response, 409, "sandbox_only")


def test_a_live_app_without_a_provider_sells_nothing(world: World, backend: Any) -> None:
    live = backend.create_app("live app", backend.app(world.a.app_id).catalog())
    minted = ok(
        world.http.post(
            "/v1/customers/dave/tokens", headers={"Authorization": f"Bearer {live.secret_key}"}
        ),
        201,
    )
    response = world.http.post(
        START,
        json={
            "customer_id": minted["client_id"],
            "product_id": "pack_50",
            "purchase_method": "hosted_checkout",
        },
        headers={"Authorization": live.app.id, "X-Revenipe-Customer-Token": minted["token"]},
    )
    assert_error(response, 409, "purchases_not_configured")


def test_granted_sources_cannot_be_canceled_by_the_customer(world: World) -> None:
    free = world.a.customers["alice"].sources["free"]
    assert_error(
        call(world, CANCEL, source_id=free, cancel_mode="immediately"), 409, "source_not_manageable"
    )
    assert_error(
        call(world, CHANGE, source_id=free, new_product_id="pro"), 409, "source_not_manageable"
    )


def test_new_plan_terms_reach_subscribers_at_their_renewal(world: World) -> None:
    source = subscribe(world.http, world.a, "alice", "pro")
    track(world, 100)  # pro's, which expire soonest: 900 left
    catalog = ok(world.http.get("/v1/catalog", headers=world.a.api()))["catalog"]
    (pro,) = (p for p in catalog["products"] if p["id"] == "pro")
    pro["grants"][0]["amount"] = 2000
    ok(world.http.put("/v1/catalog", json=catalog, headers=world.a.api()))
    assert credits(world) == 160 + 900, "nothing changes in the middle of a paid period"
    advance(world, world.a, days=29)
    sub = subscription(world, source)
    assert sub is not None and sub["product_id"] == "pro"
    # The new terms from the renewal on: 2000 (what the old grant had left ended with
    # its terms; nothing is carried into the new ones).
    assert credits(world) == 160 + 2000
    advance(world, world.a, days=31)
    # They renew as the new terms say: 2000, plus 500 of the unused 2000 carried over.
    assert credits(world) == 110 + 2000 + 500
    assert_verified(world.backend)


def test_a_product_with_live_subscriptions_cannot_leave_the_catalog(world: World) -> None:
    subscribe(world.http, world.a, "alice", "pro")
    catalog = ok(world.http.get("/v1/catalog", headers=world.a.api()))["catalog"]
    catalog["products"] = [p for p in catalog["products"] if p["id"] != "pro"]
    response = world.http.put("/v1/catalog", json=catalog, headers=world.a.api())
    body = assert_error(response, 409, "catalog_conflict")
    assert "'pro'" in body["message"]
    # Another app's subscriptions do not hold this app's catalog back.
    other = ok(world.http.get("/v1/catalog", headers=world.b.api()))["catalog"]
    other["products"] = [p for p in other["products"] if p["id"] != "pro"]
    ok(world.http.put("/v1/catalog", json=other, headers=world.b.api()))
