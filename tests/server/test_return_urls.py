"""Return URLs over HTTP: an app's list set through `PATCH /v1/app`, a deep link on the
list completing a sandbox purchase (and a trial's payment method), one off the list
refused, hostile URLs refused everywhere, the checkout page escaping what it shows."""

from __future__ import annotations

from typing import Any

import pytest

from server.conftest import World, assert_error, ok
from server.test_purchases_sandbox import ATTACH, START, add_trial_product, call, credits

from support import assert_verified

LIST = ["myapp://paid", "myapp://canceled", "https://example.com/return/*"]


def set_urls(world: World, urls: Any) -> Any:
    return world.http.patch("/v1/app", json={"return_urls": urls}, headers=world.a.api())


def start(world: World, **body: Any) -> Any:
    customer = world.a.customers["alice"]
    return world.http.post(
        START,
        json={
            "customer_id": customer.client_id,
            "product_id": "pack_50",
            "purchase_method": "hosted_checkout",
            **body,
        },
        headers=world.a.as_customer("alice"),
    )


def test_the_list_is_set_read_and_cleared(world: World) -> None:
    http, a = world.http, world.a
    assert ok(http.get("/v1/app", headers=a.api()))["return_urls"] == []
    changed = ok(set_urls(world, [*LIST, "myapp://paid"]))
    assert changed["return_urls"] == LIST
    assert changed["token_policy"] == "enforce"
    assert ok(http.get("/v1/app", headers=a.api()))["return_urls"] == LIST
    # Other settings leave it alone; B's list is B's.
    ok(http.patch("/v1/app", json={"token_policy": "enforce"}, headers=a.api()))
    assert ok(http.get("/v1/app", headers=a.api()))["return_urls"] == LIST
    assert ok(http.get("/v1/app", headers=world.b.api()))["return_urls"] == []
    assert ok(set_urls(world, []))["return_urls"] == []


@pytest.mark.parametrize(
    "urls",
    [
        ["myapp://paid", "javascript:alert(1)"],
        [" JavaScript:alert(1)"],
        ["data:text/html,hi"],
        ["file:///etc/passwd"],
        ["VBScript:x"],
        ["java\tscript:x"],
        ["myapp://paid\r\nX: 1"],
        ["https://example.com*"],
        ["*"],
        [5],
        "myapp://paid",
        [f"myapp://{i}" for i in range(51)],
    ],
)
def test_a_bad_list_is_refused_and_changes_nothing(world: World, urls: Any) -> None:
    ok(set_urls(world, LIST))
    assert_error(set_urls(world, urls), 400)
    assert ok(world.http.get("/v1/app", headers=world.a.api()))["return_urls"] == LIST


def test_a_deep_link_on_the_list_completes_a_sandbox_purchase(world: World) -> None:
    ok(set_urls(world, LIST))
    before = credits(world)
    started = ok(
        start(
            world,
            success_url="myapp://paid?session={CHECKOUT_SESSION_ID}",
            cancel_url="myapp://canceled",
        )
    )
    session, url = started["checkout"]["session_id"], started["checkout"]["checkout_url"]
    page = world.http.get(url)
    assert page.status_code == 200 and 'id="pay"' in page.text
    paid = world.http.post(f"{url}/pay", follow_redirects=False)
    assert paid.status_code == 303
    assert paid.headers["location"] == f"myapp://paid?session={session}"
    assert f'href="myapp://paid?session={session}"' in paid.text
    assert credits(world) == before + 50
    # The cancel URL, and a prefix entry.
    other = ok(start(world, cancel_url="https://example.com/return/canceled?x=1"))
    canceled = world.http.post(
        f"{other['checkout']['checkout_url']}/cancel", follow_redirects=False
    )
    assert canceled.status_code == 303
    assert canceled.headers["location"] == "https://example.com/return/canceled?x=1"
    assert credits(world) == before + 50
    assert_verified(world.backend)


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("myapp://other", 400, "return_url_not_allowed"),
        ("myapp://paid/", 400, "return_url_not_allowed"),
        ("https://evil.test/return/", 400, "return_url_not_allowed"),
        ("https://example.com.evil.test/return/", 400, "return_url_not_allowed"),
        ("javascript:alert(1)", 400, "invalid_argument"),
        ("JAVASCRIPT:alert(1)", 400, "invalid_argument"),
        ("  javascript:alert(1)", 400, "invalid_argument"),
        ("data:text/html,<script>alert(1)</script>", 400, "invalid_argument"),
        ("myapp://paid\nx", 400, "invalid_argument"),
    ],
)
def test_a_return_url_off_the_list_is_refused(
    world: World, url: str, status: int, code: str
) -> None:
    ok(set_urls(world, LIST))
    for field in ("success_url", "cancel_url"):
        body = assert_error(start(world, **{field: url}), status, code)
        assert body["field"] == field


def test_without_a_list_deep_links_are_refused_and_http_accepted(world: World) -> None:
    body = assert_error(start(world, success_url="myapp://paid"), 400, "return_url_not_allowed")
    assert "return_urls" in body["message"]
    assert ok(start(world, success_url="https://anything.example/ok"))["checkout"]


def test_the_checkout_page_escapes_the_url(world: World) -> None:
    ok(set_urls(world, ["myapp://*"]))
    hostile = "myapp://paid?a=<b>&c=\"d\"&e='f'"
    started = ok(start(world, success_url=hostile))
    paid = world.http.post(f"{started['checkout']['checkout_url']}/pay", follow_redirects=False)
    assert paid.status_code == 303
    assert "<b>" not in paid.text and '"d"' not in paid.text
    assert (
        "&lt;b&gt;" in paid.text and "&quot;d&quot;" in paid.text and "&#x27;f&#x27;" in paid.text
    )
    assert "<" not in paid.headers["location"] and '"' not in paid.headers["location"]


def test_attach_payment_method_takes_a_listed_deep_link(world: World) -> None:
    add_trial_product(world)
    ok(set_urls(world, LIST))
    started = ok(
        start(
            world,
            product_id="trial_plan",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="direct",
        )
    )
    source = started["subscription"]["subscription_id"]
    refused = call(
        world, ATTACH, access_source_id=source, mode="hosted_checkout", success_url="myapp://x"
    )
    assert_error(refused, 400, "return_url_not_allowed")
    attach = ok(
        call(
            world,
            ATTACH,
            access_source_id=source,
            mode="hosted_checkout",
            success_url="myapp://paid",
        )
    )
    url = attach["checkout"]["checkout_url"]
    saved = world.http.post(f"{url}/pay", follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "myapp://paid"
    assert_verified(world.backend)
