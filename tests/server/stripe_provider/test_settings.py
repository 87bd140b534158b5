"""An app's Stripe settings through the server API: validated, never shown back, for
live apps only; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import revenipe

from ..conftest import TestClient, assert_error, ok
from ..test_purchases_sandbox import START
from .conftest import STRIPE_CATALOG

KEY = "sk_test_" + "k" * 24 + "WXYZ"
WEBHOOK_SECRET = "whsec_" + "s" * 32


def _live(backend: revenipe.Backend) -> tuple[str, dict[str, str]]:
    created = backend.create_app("live", revenipe.load_catalog(STRIPE_CATALOG))
    return created.app.id, {"Authorization": f"Bearer {created.secret_key}"}


def test_settings_are_validated_kept_and_never_shown_back(
    backend: revenipe.Backend, http: TestClient
) -> None:
    app_id, headers = _live(backend)
    shown = ok(http.get("/v1/providers/stripe", headers=headers))
    assert shown == {
        "configured": False,
        "mode": None,
        "secret_key_last4": None,
        "webhook_secret_set": False,
        "webhook_url": f"http://testserver/v1/webhooks/stripe/{app_id}",
    }
    for body in (
        {"secret_key": "pk_test_" + "p" * 24},  # a publishable key is no secret key
        {"secret_key": "sk_test_short"},
        {"secret_key": "sk_prod_" + "k" * 24},
        {"webhook_secret": "wh_" + "s" * 32},
        {"secret_key": 42},
        {},
        {"secret_key": KEY, "extra": "typo"},
    ):
        answer = http.put("/v1/providers/stripe", json=body, headers=headers)
        error = assert_error(answer, 400)
        assert "p" * 24 not in answer.text and "s" * 32 not in answer.text, error
    # The webhook secret alone cannot come first: there is no key to sell with.
    assert_error(
        http.put("/v1/providers/stripe", json={"webhook_secret": WEBHOOK_SECRET}, headers=headers),
        400,
        "invalid_argument",
    )
    set_key = http.put("/v1/providers/stripe", json={"secret_key": KEY}, headers=headers)
    assert ok(set_key) == {
        "configured": True,
        "mode": "test",
        "secret_key_last4": "WXYZ",
        "webhook_secret_set": False,
        "webhook_url": f"http://testserver/v1/webhooks/stripe/{app_id}",
    }
    both = ok(
        http.put("/v1/providers/stripe", json={"webhook_secret": WEBHOOK_SECRET}, headers=headers)
    )
    assert both["webhook_secret_set"] is True and both["secret_key_last4"] == "WXYZ"
    for answer in (set_key, http.get("/v1/providers/stripe", headers=headers)):
        assert KEY not in answer.text and WEBHOOK_SECRET not in answer.text
    live_key = "rk_live_" + "r" * 30 + "9876"
    ok(http.put("/v1/providers/stripe", json={"secret_key": live_key}, headers=headers))
    shown = ok(http.get("/v1/providers/stripe", headers=headers))
    assert (shown["mode"], shown["secret_key_last4"], shown["webhook_secret_set"]) == (
        "live",
        "9876",
        True,
    )
    assert_error(http.get("/v1/providers/stripe"), 401)
    assert_error(http.put("/v1/providers/stripe", json={"secret_key": KEY}), 401)


def test_a_live_app_sells_through_stripe_once_configured_and_not_after_removal(
    backend: revenipe.Backend, http: TestClient, fake_stripe: Any
) -> None:
    app_id, headers = _live(backend)
    minted = ok(http.post("/v1/customers/dave/tokens", headers=headers), 201)
    client = {"Authorization": app_id, "X-Revenipe-Customer-Token": minted["token"]}
    body = {
        "customer_id": minted["client_id"],
        "product_id": "pack_50",
        "purchase_method": "hosted_checkout",
    }
    assert_error(http.post(START, json=body, headers=client), 409, "purchases_not_configured")
    ok(http.put("/v1/providers/stripe", json={"secret_key": KEY}, headers=headers))
    started = ok(http.post(START, json=body, headers=client))
    assert started["checkout"]["checkout_url"].startswith("https://checkout.stripe.com/")
    assert fake_stripe.last("POST", "/v1/checkout/sessions").account == KEY
    assert http.delete("/v1/providers/stripe", headers=headers).status_code == 204
    assert ok(http.get("/v1/providers/stripe", headers=headers))["configured"] is False
    assert_error(http.post(START, json=body, headers=client), 409, "purchases_not_configured")


def test_a_sandbox_app_never_sells_through_stripe(
    backend: revenipe.Backend, http: TestClient
) -> None:
    created = backend.create_app("sandbox", revenipe.load_catalog(STRIPE_CATALOG), sandbox=True)
    headers = {"Authorization": f"Bearer {created.secret_key}"}
    answer = http.put("/v1/providers/stripe", json={"secret_key": KEY}, headers=headers)
    assert_error(answer, 409, "live_only")
    assert ok(http.get("/v1/providers/stripe", headers=headers))["configured"] is False
