"""Issue 4's acceptance, end to end: a real `revenipe serve --sandbox`, the Python SDK, the
sandbox's checkout page driven as a browser drives it, the test clock, `revenipe verify`.

A customer buys a credit pack and the `pro` subscription at the hosted checkout
(request the page, submit its pay form), tracks against the purchased credits, the
app's clock moves past the renewal (pro's monthly credits refill, the unused ones carry
over up to the rollover max), the customer cancels at period end, the clock moves past
it, and pro's access is gone. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import httpx

from e2e.harness import TLS, Server, Servers, run_verify
from revenipe.client import (
    ApiError,
    RevenipeConfig,
    RevenipeServerClient,
    RevenipeSync,
)


class _Forms(HTMLParser):
    """The forms of a page: their action and method, and the label of their button."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self._in_button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "method": values["method"]})
        elif tag == "button" and self.forms:
            self._in_button = True
            self.forms[-1]["field"] = f"{values.get('name', '')}={values.get('value', '')}"

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self.forms[-1]["label"] = data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._in_button = False


def pay_at_checkout(checkout_url: str, expected_label: str) -> httpx.Response:
    """What a person does: open the checkout page, press its pay button."""
    with httpx.Client(verify=TLS, timeout=30.0, follow_redirects=False) as browser:
        page = browser.get(checkout_url)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        forms = _Forms()
        forms.feed(page.text)
        (pay,) = (f for f in forms.forms if f.get("label") == expected_label)
        assert pay["method"] == "post"
        target = httpx.URL(checkout_url).join(pay["action"])
        return browser.post(
            target,
            content=pay["field"],
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )


def credits_of(client: RevenipeSync, key: str = "credits") -> int:
    usage_key = client.get_usage_key(key)
    assert usage_key is not None
    return usage_key.remaining


def _entitlement_of(client: RevenipeSync, source_id: str) -> Any:
    customer = client.customer
    assert customer is not None
    found = [e for e in customer.entitlements if e.access_source_id == source_id]
    return found[0] if found else None


def test_buy_pack_and_subscription_renew_then_cancel_at_period_end(servers: Servers) -> None:
    server = servers.start(sandbox=True)
    with RevenipeServerClient(server.base_url, server.secret_key) as backend:
        config = RevenipeConfig(
            app_id=server.app_id,
            base_url=server.base_url,
            customer_token_supplier=lambda user: backend.mint_customer_token(user).token,
        )
        with RevenipeSync(config) as client:
            _journey(server, backend, client)
    run_verify(server.database_url)


def _journey(server: Server, backend: RevenipeServerClient, client: RevenipeSync) -> None:
    client.login("buyer-1")
    assert credits_of(client) == 100  # the free tier

    # --- a credit pack, bought at the hosted checkout ---------------------------------
    started = client.start_purchase(
        "pack_50", purchase_method="hosted_checkout", success_url="https://app.example/done"
    )
    assert started.checkout is not None and started.product_type == "one_time"
    assert client.refresh_entitlements() and credits_of(client) == 100, "not before paying"
    done = pay_at_checkout(started.checkout.checkout_url, "Pay")
    assert done.status_code == 303 and done.headers["location"] == "https://app.example/done"
    customer = client.refresh_entitlements()
    assert credits_of(client) == 150
    (pack_source,) = (
        e.access_source_id for e in customer.entitlements if e.entitlement_id == "purchased_credits"
    )
    purchased = client.track("purchased_credits", 20)
    assert purchased.success and purchased.remaining == 30

    # --- the pro subscription, bought the same way ------------------------------------
    started = client.start_purchase("pro", purchase_method="hosted_checkout")
    assert started.checkout is not None and started.product_type == "subscription"
    done = pay_at_checkout(started.checkout.checkout_url, "Pay")
    assert done.status_code == 200 and "complete" in done.text
    customer = client.refresh_entitlements()
    (pro,) = (s for s in customer.subscriptions if s.product_id == "pro")
    assert pro.status == "active" and pro.provider == "sandbox" and pro.can_cancel
    assert pro.renews_at is not None and pro.payment_method_attached
    assert credits_of(client) == 100 + 30 + 1000
    # Spend 300 through the usage key: of the monthly credits, those that expire soonest
    # (pro's, with its period) pay first. (Tracking the entitlement id itself, the SDK
    # names the first source it holds it from, as the protocol says: the free tier's.)
    spent = client.track("credits", 300)
    assert spent.success and spent.remaining == 100 + 30 + 700
    client.refresh_entitlements()
    assert _entitlement_of(client, pro.access_source_id).remaining == 700

    # --- past the renewal: pro refills to 1000 and carries 500 of its 700 -----------
    renews_at = pro.renews_at
    clock = backend.sandbox_clock()
    days = (renews_at - _parse(clock["now"])).days + 1
    backend.advance_sandbox_clock(days=days)
    customer = client.refresh_entitlements()
    (pro,) = (s for s in customer.subscriptions if s.product_id == "pro")
    assert pro.renews_at is not None and pro.renews_at > renews_at
    assert _entitlement_of(client, pro.access_source_id).remaining == 1000 + 500
    tracked = client.track("credits", 1)
    assert tracked.success

    # --- cancel at period end: access until then, none after ------------------------
    canceled = client.cancel_subscription(pro.access_source_id, cancel_mode="period_end")
    assert canceled.success and canceled.will_cancel_at_period_end
    assert canceled.cancels_at == pro.renews_at
    customer = client.refresh_entitlements()
    (pro,) = (s for s in customer.subscriptions if s.product_id == "pro")
    assert pro.will_cancel_at_period_end and pro.renews_at is None and not pro.can_cancel
    assert _entitlement_of(client, pro.access_source_id) is not None, "still paid for"
    ends_at = canceled.cancels_at
    assert ends_at is not None
    backend.advance_sandbox_clock(days=(ends_at - _parse(backend.sandbox_clock()["now"])).days + 1)
    customer = client.refresh_entitlements()
    assert [s.product_id for s in customer.subscriptions] == ["free"]
    assert _entitlement_of(client, pro.access_source_id) is None
    refused = client.track("credits", 101)  # the free tier's 100 is all there is
    assert not refused.success and refused.error == "insufficient_balance"
    try:
        client.uncancel_subscription(pro.access_source_id)
    except ApiError as error:
        assert error.status_code == 409 and error.code == "subscription_not_active"
    else:
        raise AssertionError("an ended subscription was uncanceled")
    # The pack (30 days) is gone too by now, two months on: written off, not deleted.
    assert _entitlement_of(client, pack_source) is None
    assert credits_of(client) == 100
    with server.api() as api:
        ledger = api.get("/v1/ledger", params={"customer": "buyer-1"}).json()["entries"]
    kinds = [e["kind"] for e in ledger]
    assert kinds.count("granted") >= 3 and "reset" in kinds and "expired" in kinds, kinds


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
