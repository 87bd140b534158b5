"""Signing in, in a real browser: the one-time link (once only), a password, the limit on
wrong passwords, and a POST without the CSRF token."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser.harness import Live, sign_in_with_link

SIGN_IN_PAGE = re.compile(r".*/dashboard/sign-in\?next=.+")


def test_the_first_start_link_creates_an_operator_and_works_once(
    live: Live, new_page: Callable[[], Any], screenshot: Callable[..., Path]
) -> None:
    assert live.setup_link is not None, live.server.describe()
    page = new_page()
    page.goto(live.setup_link)
    page.get_by_role("heading", name="Create the first operator").wait_for()
    screenshot(page, "set-up-link")
    page.get_by_label("Email").fill("first@example.com")
    page.get_by_label("Password").fill("first operator password")
    page.get_by_role("button", name="Create and sign in").click()
    page.wait_for_url("**/dashboard/")
    assert page.get_by_text("first@example.com").is_visible()

    again = new_page()
    response = again.goto(live.setup_link)
    assert response is not None and response.status == 410
    assert again.get_by_role("heading", name="Link used or expired").is_visible()


def test_an_operator_link_signs_in_once(live: Live, new_page: Callable[[], Any]) -> None:
    link = live.sign_in_link()
    page = new_page()
    sign_in_with_link(page, link)
    assert page.get_by_role("heading", name="Apps").is_visible()
    assert page.get_by_text(live.operator_email).is_visible()

    other = new_page()
    response = other.goto(link)
    assert response is not None and response.status == 410


def test_password_sign_in_and_sign_out(
    live: Live, new_page: Callable[[], Any], screenshot: Callable[..., Path]
) -> None:
    page = new_page()
    page.goto(live.app_page("customers"))
    page.wait_for_url(SIGN_IN_PAGE)
    screenshot(page, "sign-in")
    page.get_by_label("Email").fill(live.operator_email)
    page.get_by_label("Password").fill(live.operator_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/apps/{live.app_id}/customers")
    assert page.get_by_role("heading", name="Customers").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "revenipe_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/sign-in")
    page.goto(live.app_page("customers"))
    page.wait_for_url(SIGN_IN_PAGE)


def test_wrong_passwords_are_rate_limited(live: Live, new_page: Callable[[], Any]) -> None:
    email = "limited@example.com"
    page = new_page()
    statuses = []
    for _ in range(6):
        page.goto(live.dashboard("sign-in"))
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("not the password")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Sign in").click()
        statuses.append(answer.value.status)
    assert statuses == [401, 401, 401, 401, 401, 429]
    assert int(answer.value.headers["retry-after"]) > 0
    assert page.get_by_text("Too many failed sign-ins").is_visible()


def test_a_post_without_the_csrf_token_is_refused(
    live: Live, operator_page: Callable[[], Any]
) -> None:
    page = operator_page()
    customer = f"csrf-{live.database}"
    with live.api() as api:
        assert api.post(f"/v1/customers/{customer}/tokens", json={}).status_code == 201
        client_id = api.get(f"/v1/customers/{customer}").json()["client_id"]
    action = live.app_page(f"customers/{client_id}/grant-credits")
    refused = page.request.post(action, form={"entitlement_id": "bonus_credits", "amount": "5"})
    assert refused.status == 403
    forged = page.request.post(
        action, form={"entitlement_id": "bonus_credits", "amount": "5", "csrf_token": "forged"}
    )
    assert forged.status == 403
    with live.api() as api:
        balances = api.get(f"/v1/customers/{customer}").json()
    assert all(e["entitlement_id"] != "bonus_credits" for e in balances["entitlements"])
