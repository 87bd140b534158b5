"""The customer pages in-process: search and pages, balances equal to the API's, every
action through its service, hostile strings escaped, CSV exports safe to open."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any
from urllib.parse import quote

import markupsafe
import pytest

from revenipe import load_catalog
from revenipe.services import apps as app_service
from revenipe.services import customers as customer_service
from revenipe.services import tokens as token_service
from revenipe.services.customers import CustomerRef
from revenipe.services.usage import track as usage_service

from .conftest import Dash

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</textarea><svg onload=alert(1)>",
    "{{ 7*7 }}",
]


def _flash(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'class="flash flash-\w+"[^>]*>([^<]*)<', page)]


def _track(dash: Dash, external_id: str, id: str, value: int, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    response = dash.http.post(
        f"/v1/customers/{quote(external_id, safe='')}/track",
        json={"id": id, "value": value},
        headers={"Authorization": f"Bearer {dash.secret_key}", **headers},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _remaining(page: str, balance_id: str) -> int:
    row = re.search(
        rf'data-balance="{re.escape(balance_id)}">.*?<td class="num remaining">([^<]*)<',
        page,
        re.S,
    )
    assert row is not None, balance_id
    return int(row.group(1).replace(",", ""))


def _customer_page(dash: Dash, client_id: str, query: str = "") -> str:
    response = dash.http.get(dash.url(f"customers/{client_id}") + query)
    assert response.status_code == 200, response.text
    return response.text


def test_the_customer_page_shows_the_apis_numbers(dash: Dash) -> None:
    dash.signed_in()
    _track(dash, "bob", "credits", 12)
    dash.api("POST", "/v1/customers/bob/grants", json={"product_id": "pack_50"})
    _track(dash, "bob", "purchased_credits", 5)
    state = dash.customer("bob")
    page = _customer_page(dash, state["client_id"])
    for key in state["usage_keys"]:
        assert _remaining(page, key["key_id"]) == key["remaining"]
    totals: dict[str, int] = {}
    for entitlement in state["entitlements"]:
        if entitlement["type"] == "metered":
            eid = entitlement["entitlement_id"]
            totals[eid] = totals.get(eid, 0) + entitlement["remaining"]
    assert totals == {"monthly_credits": 88, "purchased_credits": 45}
    for entitlement_id, remaining in totals.items():
        assert _remaining(page, entitlement_id) == remaining
    assert "Burn-down" in page and "Credits: remaining, this period" in page
    assert 'role="img"' in page and "<title id=" in page


def test_granting_credits_changes_the_balance_and_the_chart(dash: Dash) -> None:
    csrf = dash.signed_in()
    state = dash.customer("carol")
    before = _customer_page(dash, state["client_id"])
    response = dash.http.post(
        dash.url(f"customers/{state['client_id']}/grant-credits"),
        data={"entitlement_id": "bonus_credits", "amount": "50", "csrf_token": csrf},
    )
    assert _flash(response.text) == ["Granted 50 bonus_credits."]
    assert _remaining(response.text, "credits") == _remaining(before, "credits") + 50
    assert dash.customer("carol")["usage_keys"][0]["remaining"] == 150
    burn = re.compile(r'data-balance="credits">.*?<path class="line" d="([^"]+)"', re.S)
    assert burn.search(before) and burn.search(response.text)
    assert burn.search(before).group(1) != burn.search(response.text).group(1)  # type: ignore[union-attr]
    # The flash shows once.
    assert _flash(_customer_page(dash, state["client_id"])) == []


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"entitlement_id": "bonus_credits", "amount": "-3"}, "amount must be positive"),
        ({"entitlement_id": "bonus_credits", "amount": "1.5"}, "amount must be a whole number"),
        ({"entitlement_id": "no_such_thing", "amount": "5"}, "no_such_thing"),
    ],
)
def test_a_refused_action_says_why_on_the_page(
    dash: Dash, form: dict[str, str], message: str
) -> None:
    csrf = dash.signed_in()
    state = dash.customer("dave")
    response = dash.http.post(
        dash.url(f"customers/{state['client_id']}/grant-credits"),
        data={**form, "csrf_token": csrf},
    )
    assert response.status_code == 200
    flashes = _flash(response.text)
    assert len(flashes) == 1 and message in flashes[0], flashes
    assert 'class="flash flash-error"' in response.text
    assert dash.customer("dave") == state


def test_grant_a_product_reverse_and_mint_a_token(dash: Dash) -> None:
    csrf = dash.signed_in()
    state = dash.customer("erin")
    client_id = state["client_id"]
    granted = dash.http.post(
        dash.url(f"customers/{client_id}/grant-product"),
        data={"product_id": "welcome", "csrf_token": csrf},
    )
    assert _flash(granted.text) == ["Granted the product welcome."]
    event = _track(dash, "erin", "credits", 4)
    event_id = event["usage_event_id"] if "usage_event_id" in event else event["id"]
    reversed_page = dash.http.post(
        dash.url(f"customers/{client_id}/reverse"),
        data={"usage_event_id": event_id, "amount": "3", "csrf_token": csrf},
    )
    assert _flash(reversed_page.text) == [f"Reversed 3 of {event_id}."]
    credits = next(k for k in dash.customer("erin")["usage_keys"] if k["key_id"] == "credits")
    assert credits["remaining"] == 100 + 10 - 4 + 3

    minted = dash.http.post(
        dash.url(f"customers/{client_id}/token"),
        data={"ttl_seconds": "600", "csrf_token": csrf},
    )
    assert minted.status_code == 200
    token = re.search(r'<code id="minted-token">([^<]+)</code>', minted.text)
    assert token is not None
    app = app_service.get_app(dash.backend.context, dash.app_id)
    claims = token_service.check_customer_token(app, html.unescape(token.group(1)), dash.clock())
    assert claims.customer_id == client_id


def test_a_page_reverses_only_its_own_customers_events(dash: Dash) -> None:
    csrf = dash.signed_in()
    mine = dash.customer("frank")
    event = _track(dash, "grace", "credits", 2)
    event_id = event["usage_event_id"] if "usage_event_id" in event else event["id"]
    response = dash.http.post(
        dash.url(f"customers/{mine['client_id']}/reverse"),
        data={"usage_event_id": event_id, "csrf_token": csrf},
    )
    assert "this customer has no usage event" in _flash(response.text)[0]
    grace = next(k for k in dash.customer("grace")["usage_keys"] if k["key_id"] == "credits")
    assert grace["remaining"] == 98


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_ids_and_names_render_as_text(dash: Dash, hostile: str) -> None:
    dash.signed_in()
    app_service.create_app(dash.backend.context, f"app {hostile}")
    # Through the services: an id with a "/" cannot be named in an API path.
    context = dash.backend.context
    customer = customer_service.ensure_customer(context, dash.app_id, hostile)
    usage_service.track(
        context, dash.app_id, CustomerRef.external(hostile), "credits", 1, idempotency_key=hostile
    )
    state = {"client_id": customer.id}
    pages = [
        dash.http.get(dash.url("customers")).text,
        dash.http.get(dash.url("customers"), params={"q": hostile}).text,
        _customer_page(dash, state["client_id"]),
        dash.http.get("/dashboard/").text,
    ]
    for page in pages:
        assert hostile not in page or hostile == "{{ 7*7 }}"
        assert str(markupsafe.escape(hostile)) in page
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "<svg onload" not in page
    # Data is never a template: the customer's heading is the text as given.
    heading = re.search(r'<h1 id="customer-title">([^<]*)</h1>', pages[2])
    assert heading is not None and heading.group(1) == str(markupsafe.escape(hostile))


def test_search_finds_by_either_id_and_pages_by_keyset(dash: Dash) -> None:
    dash.signed_in()
    ids = {f"user-{n:03}": dash.customer(f"user-{n:03}")["client_id"] for n in range(55)}
    by_internal = dash.http.get(dash.url("customers"), params={"q": ids["user-007"]}).text
    assert "Exact match" in by_internal and "user-007" in by_internal
    by_external = dash.http.get(dash.url("customers"), params={"q": "user-012"}).text
    assert "Exact match" in by_external
    first = dash.http.get(dash.url("customers"), params={"q": "user-0"}).text
    shown = re.findall(r'class="customer-link">(user-\d+)<', first)
    assert shown == [f"user-{n:03}" for n in range(50)]
    following = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert following is not None
    second = dash.http.get(html.unescape(following.group(1))).text
    assert re.findall(r'class="customer-link">(user-\d+)<', second) == [
        f"user-{n:03}" for n in range(50, 55)
    ]
    assert 'rel="next"' not in second
    nothing = dash.http.get(dash.url("customers"), params={"q": "nobody-like-this"}).text
    assert "No customer matches" in nothing


def test_history_filters_and_pages(dash: Dash) -> None:
    dash.signed_in()
    for n in range(25):
        _track(dash, "heidi", "monthly_credits" if n % 2 else "credits", 1)
    client_id = dash.customer("heidi")["client_id"]
    page = _customer_page(dash, client_id, "?key=credits")
    events = re.search(r'id="usage-events".*?</table>', page, re.S)
    assert events is not None
    tracked = re.findall(r"<td>(credits|monthly_credits)(?:<br>|</td>)", events.group(0))
    assert set(tracked) == {"credits"} and len(tracked) == 13
    everything = _customer_page(dash, client_id)
    assert "events_before=" in everything  # 25 events: a second page
    today = dash.clock().date().isoformat()
    assert "No usage event matches" in _customer_page(dash, client_id, "?until=2020-01-01")
    assert "events_before=" in _customer_page(dash, client_id, f"?since={today}&until={today}")


def test_csv_exports_are_streamed_and_safe_to_open(dash: Dash) -> None:
    dash.signed_in()
    hostile = "=1+2"
    _track(dash, hostile, "credits", 7, key="@SUM(1+1)")
    _track(dash, hostile, "credits", 2, key="-2+3")
    client_id = dash.customer(hostile)["client_id"]
    events = dash.http.get(dash.url(f"customers/{client_id}/events.csv"))
    assert events.status_code == 200
    assert events.headers["content-type"].startswith("text/csv")
    assert "attachment" in events.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(events.text)))
    assert sorted(r["idempotency_key"] for r in rows) == ["'-2+3", "'@SUM(1+1)"]
    assert sorted(int(r["consumed"]) for r in rows) == [2, 7]
    ledger = dash.http.get(dash.url(f"customers/{client_id}/ledger.csv"))
    entries = list(csv.DictReader(io.StringIO(ledger.text)))
    assert sorted(int(e["amount"]) for e in entries) == [-7, -2, 100]  # numbers stay numbers
    assert {e["kind"] for e in entries} == {"granted", "consumed"}
    filtered = dash.http.get(
        dash.url(f"customers/{client_id}/ledger.csv"), params={"key": "bonus_credits"}
    )
    assert len(list(csv.DictReader(io.StringIO(filtered.text)))) == 0


def test_an_unknown_customer_or_app_is_a_404_page(dash: Dash) -> None:
    dash.signed_in()
    missing = dash.http.get(dash.url("customers/cus_nothing"))
    assert missing.status_code == 404
    assert "text/html" in missing.headers["content-type"]
    other = dash.http.get("/dashboard/apps/app_nothing/customers")
    assert other.status_code == 404


HOSTILE_CATALOG = """
entitlements:
  - id: credits_x
    name: "</script><script>alert(1)</script>"
    type: metered
usage_keys:
  - id: key_x
    name: "<img src=x onerror=alert(2)>"
    entitlements: [credits_x]
products:
  - id: free_x
    name: "</title><svg onload=alert(3)>"
    type: subscription
    recurring_interval: month
    price: 0
    default: true
    grants:
      - entitlement: credits_x
        amount: 10
        reset: period
"""


def test_hostile_catalog_names_render_as_text(dash: Dash) -> None:
    dash.signed_in()
    context = dash.backend.context
    app = app_service.create_app(context, "Hostile catalog", load_catalog(HOSTILE_CATALOG)).app
    customer = customer_service.ensure_customer(context, app.id, "someone")
    page = dash.http.get(f"/dashboard/apps/{app.id}/customers/{customer.id}").text
    for name in (
        "</script><script>alert(1)</script>",
        "<img src=x onerror=alert(2)>",
        "</title><svg onload=alert(3)>",
    ):
        assert name not in page
        assert str(markupsafe.escape(name)) in page
    assert "<script>alert" not in page and "<svg onload" not in page


def test_bidirectional_controls_in_an_id_are_shown_not_obeyed(dash: Dash) -> None:
    """A right-to-left override makes "user-<RLO>gnp.exe" read as "user-exe.png": the
    pages print each such control as its code point, so an operator sees the id as it
    is and nothing around it is reordered. Right-to-left letters are left alone."""
    dash.signed_in()
    context = dash.backend.context
    spoof = "user-\u202egnp.exe"
    isolate = "\u2067evil\u2069 \u200fname\u061c"
    customer = customer_service.ensure_customer(context, dash.app_id, spoof)
    customer_service.ensure_customer(context, dash.app_id, isolate)
    arabic = customer_service.ensure_customer(context, dash.app_id, "مستخدم-7")
    pages = {
        "list": dash.http.get(dash.url("customers")).text,
        "search": dash.http.get(dash.url("customers"), params={"q": spoof}).text,
        "customer": _customer_page(dash, customer.id),
        "arabic": _customer_page(dash, arabic.id),
    }
    for name, page in pages.items():
        for control in "\u202e\u2067\u2069\u200f\u061c":
            assert control not in page, (name, hex(ord(control)))
    assert "user-[U+202E]gnp.exe" in pages["list"]
    assert "[U+2067]evil[U+2069] [U+200F]name[U+061C]" in pages["list"]
    assert "user-[U+202E]gnp.exe" in pages["customer"]
    assert "مستخدم-7" in pages["arabic"]
