"""Customers in a real browser: find one, read the same balances as the API, grant 50
credits and watch the balance and the burn-down chart move; hostile ids render as text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

import revenipe
from browser.harness import Live
from e2e.harness import E2E_CATALOG
from revenipe.services import apps as app_service
from revenipe.services import customers as customer_service
from revenipe.services.customers import CustomerRef
from revenipe.services.purchases.sandbox import clock as clock_service
from revenipe.services.usage import track as usage_service

HOSTILE_ID = "<img src=x onerror=alert(1)>"


def _track(live: Live, external_id: str, id: str, value: int) -> dict[str, Any]:
    with live.api() as api:
        response = api.post(
            f"/v1/customers/{quote(external_id, safe='')}/track", json={"id": id, "value": value}
        )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["success"] is True, answer
    return answer


def _api_customer(live: Live, external_id: str) -> dict[str, Any]:
    with live.api() as api:
        response = api.get(f"/v1/customers/{quote(external_id, safe='')}")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def _shown_remaining(page: Any, balance_id: str) -> int:
    text = page.locator(f'tr.balance-row[data-balance="{balance_id}"] td.remaining').inner_text()
    return int(text.replace(",", ""))


def _assert_page_matches_api(page: Any, state: dict[str, Any]) -> None:
    for key in state["usage_keys"]:
        assert _shown_remaining(page, key["key_id"]) == key["remaining"], key
    metered: dict[str, int] = {}
    for entitlement in state["entitlements"]:
        if entitlement["type"] == "metered":
            eid = entitlement["entitlement_id"]
            metered[eid] = metered.get(eid, 0) + entitlement["remaining"]
    assert metered, state
    for entitlement_id, remaining in metered.items():
        assert _shown_remaining(page, entitlement_id) == remaining, entitlement_id


def test_find_a_customer_and_grant_50_credits(
    live: Live,
    operator_page: Callable[[], Any],
    screenshot: Callable[..., Path],
) -> None:
    external_id = f"alice-{live.database}"
    _track(live, external_id, "credits", 7)
    _track(live, external_id, "monthly_credits", 3)
    page = operator_page()
    page.goto(live.app_page("customers"))
    screenshot(page, "customers")
    page.get_by_label("External id, or internal id").fill("alice")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=external_id).click()
    page.get_by_role("heading", name=external_id).wait_for()

    before = _api_customer(live, external_id)
    _assert_page_matches_api(page, before)
    credits_before = _shown_remaining(page, "credits")
    assert credits_before == 90
    chart = page.locator('.burn-down[data-balance="credits"] path.line')
    drawn_before = chart.get_attribute("d")
    assert drawn_before

    page.locator("#grant-credits summary").click()
    form = page.locator("#grant-credits")
    form.get_by_label("Entitlement").select_option("bonus_credits")
    form.get_by_label("Amount").fill("50")
    form.get_by_role("button", name="Grant").click()
    page.get_by_role("status").filter(has_text="Granted 50 bonus_credits.").wait_for()

    after = _api_customer(live, external_id)
    assert next(k for k in after["usage_keys"] if k["key_id"] == "credits")["remaining"] == 140
    _assert_page_matches_api(page, after)
    assert _shown_remaining(page, "credits") == credits_before + 50
    drawn_after = chart.get_attribute("d")
    assert drawn_after and drawn_after != drawn_before
    description = page.locator('.burn-down[data-balance="credits"] desc').text_content()
    assert description is not None and description.endswith("to 140 now.")
    assert page.locator("#ledger-entries").get_by_text("+50").count() >= 1
    screenshot(page, "customer")
    # What the README shows (docs/images/dashboard-customer.png is a copy of it).
    screenshot(page, "customer-window", full_page=False)


def test_a_hostile_external_id_renders_as_text(
    live: Live, operator_page: Callable[[], Any], screenshot: Callable[..., Path]
) -> None:
    _track(live, HOSTILE_ID, "credits", 1)
    page = operator_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live.app_page("customers") + "?q=" + quote("<img"))
    link = page.get_by_role("link", name=HOSTILE_ID)
    assert link.is_visible()
    assert page.locator("main img").count() == 0
    link.click()
    page.get_by_role("heading", name=HOSTILE_ID).wait_for()
    assert page.get_by_text(HOSTILE_ID, exact=True).first.is_visible()
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    screenshot(page, "customer-hostile-id")


HOSTILE_CATALOG = """
entitlements:
  - id: credits_x
    name: "</script><script>alert(1)</script>"
    type: metered
products:
  - id: free_x
    name: "<img src=x onerror=alert(2)>"
    type: subscription
    recurring_interval: month
    price: 0
    default: true
    grants:
      - entitlement: credits_x
        amount: 10
        reset: period
"""


def test_hostile_catalog_names_render_as_text(live: Live, operator_page: Callable[[], Any]) -> None:
    context = live.backend.context
    app = app_service.create_app(
        context, f"</script>{live.database}", revenipe.load_catalog(HOSTILE_CATALOG)
    ).app
    customer = customer_service.ensure_customer(context, app.id, "someone")
    page = operator_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live.dashboard(f"apps/{app.id}/customers/{customer.id}"))
    page.get_by_role("heading", name="someone").wait_for()
    assert page.get_by_text("</script><script>alert(1)</script>").first.is_visible()
    assert page.get_by_text("<img src=x onerror=alert(2)>").first.is_visible()
    assert page.locator("main img, main script").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []


def test_the_apps_and_settings_pages(
    live: Live, operator_page: Callable[[], Any], screenshot: Callable[..., Path]
) -> None:
    page = operator_page()
    page.get_by_role("heading", name="Apps").wait_for()
    screenshot(page, "apps")
    page.get_by_role("link", name="Default app").click()
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("heading", name="Settings").wait_for()
    page.get_by_role("button", name="Create a secret key").click()
    shown = page.locator("#new-secret-key code").inner_text()
    assert shown.startswith("sk_")
    with httpx.Client(base_url=live.base_url) as http:
        listed = http.get("/v1/customers", headers={"Authorization": f"Bearer {shown}"})
    assert listed.status_code == 200
    screenshot(page, "settings")
    page.goto(live.app_page("settings"))  # shown once: not on the page any more
    assert page.locator("#secret-keys").get_by_text("active").count() >= 2
    assert page.locator("#new-secret-key").count() == 0


USES_PER_DAY = [3, 6, 2, 9, 4, 0, 1, 7, 5, 3, 8, 2, 6, 4, 0, 5, 9, 3]


def test_a_month_of_use_for_the_readme(
    live: Live, operator_page: Callable[[], Any], screenshot: Callable[..., Path]
) -> None:
    """A sandbox app's customer over 18 days of its test clock: the burn-down has a
    story to tell. Its window is docs/images/dashboard-customer.png."""
    context = live.backend.context
    app = app_service.create_app(
        context, "Acme Studio", revenipe.load_catalog(E2E_CATALOG), sandbox=True
    ).app
    customer = customer_service.ensure_customer(context, app.id, "maria@acme.test")
    who = CustomerRef.internal(customer.id)
    for day, uses in enumerate(USES_PER_DAY):
        clock_service.advance_clock(context, app.id, 86_400 - 3_600 * (day % 3))
        if day == 9:
            customer_service.grant_product(context, app.id, who, "pack_50")
        if uses:
            tracked = usage_service.track(context, app.id, who, "credits", uses)
            assert tracked.success, tracked
    page = operator_page()
    page.set_viewport_size({"width": 1280, "height": 1180})
    page.goto(live.dashboard(f"apps/{app.id}/customers/{customer.id}"))
    page.get_by_role("heading", name="maria@acme.test").wait_for()
    remaining = 100 + 50 - sum(USES_PER_DAY)
    assert _shown_remaining(page, "credits") == remaining
    steps = page.locator('.burn-down[data-balance="credits"] path.line').get_attribute("d")
    assert steps is not None and steps.count(" V") >= len([u for u in USES_PER_DAY if u]) + 1
    page.locator("#balances-heading").scroll_into_view_if_needed()
    screenshot(page, "customer-month", full_page=False)
