"""Batch track (`POST /v1/track/batch`) and priced actions over HTTP: the answer per item,
a retried batch charged once, one bad item failing alone, a malformed batch changing
nothing; a priced action through the client protocol and the lean track route."""

from __future__ import annotations

import json
from typing import Any

import pytest

import revenipe
from server.conftest import SERVER_CATALOG, World, assert_error, assert_unchanged, ok, snapshot

from support import assert_verified

COSTS = "    costs: {image_generation: 5, export_4k: 20, huge_job: 1125899906842624}\n"
BATCH = "/v1/track/batch"


@pytest.fixture
def priced(world: World) -> World:
    """App A with priced actions on `credits` (a new catalog version)."""
    document = revenipe.load_catalog(
        SERVER_CATALOG.replace(
            "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n",
            "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n" + COSTS,
        )
    ).to_document()
    assert document["usage_keys"][0]["costs"]["image_generation"] == 5
    ok(world.http.put("/v1/catalog", json=document, headers=world.a.api()))
    return world


def credits(world: World, external_id: str) -> int:
    state = ok(world.http.get(f"/v1/customers/{external_id}", headers=world.a.api()))
    (key,) = [k for k in state["usage_keys"] if k["key_id"] == "credits"]
    return int(key["remaining"])


def item(customer: str, value: Any, key: str, id: str = "credits") -> dict[str, Any]:
    return {"customer": customer, "id": id, "value": value, "idempotency_key": key}


# --- priced actions --------------------------------------------------------------------


def test_a_priced_action_through_every_track_route(priced: World) -> None:
    a, http = priced.a, priced.http
    before = credits(priced, "alice")
    alice = a.customers["alice"]
    body = {"client_id": alice.client_id, "entitlement_id": "image_generation", "value": 2}
    answer = ok(http.post("/v1/customer/track", json=body, headers=a.as_customer("alice")))
    # The client protocol's exact field set: the id echoed, amounts in the key's units.
    assert answer == {
        "success": True,
        "requested": 10,
        "consumed": 10,
        "remaining": before - 10,
        "entitlement_id": "image_generation",
        "access_source_id": None,
        "error": None,
    }
    # The lean route (a plain body) and FastAPI's route (an extra field) answer alike.
    lean = http.post(
        "/v1/customers/alice/track",
        content=b'{"id": "export_4k", "value": 1}',
        headers={**a.api(), "Content-Type": "application/json"},
    )
    answer = ok(lean)
    assert (answer["requested"], answer["remaining"]) == (20, before - 30)
    assert (answer["action"], answer["unit_price"], answer["entitlement_id"]) == (
        "export_4k",
        20,
        "export_4k",
    )
    check = ok(
        http.post(
            "/v1/customers/alice/check",
            json={"id": "image_generation", "value": 3},
            headers=a.api(),
        )
    )
    assert (check["requested"], check["remaining_after"], check["action"]) == (
        15,
        before - 45,
        "image_generation",
    )
    history = ok(http.get("/v1/usage_events?customer=alice&id=credits", headers=a.api()))
    priced_events = [e for e in history["usage_events"] if e["action"] is not None]
    assert [(e["id"], e["action"], e["unit_price"], e["requested"]) for e in priced_events] == [
        ("credits", "export_4k", 20, 20),
        ("credits", "image_generation", 5, 10),
    ]
    reversal = ok(
        http.post(
            f"/v1/usage_events/{priced_events[0]['usage_event_id']}/reversals", headers=a.api()
        ),
        201,
    )
    assert reversal["amount"] == 20
    assert credits(priced, "alice") == before - 10
    assert_verified(priced.backend, a.app_id)


@pytest.mark.parametrize("value", [8, 2**53 - 1])
def test_a_priced_overflow_is_a_400_and_changes_nothing(priced: World, value: int) -> None:
    before = snapshot(priced)
    response = priced.http.post(
        "/v1/customers/newcomer/track",
        json={"id": "huge_job", "value": value},
        headers=priced.a.api(),
    )
    assert_error(response, 400, "invalid_value")
    assert_unchanged(priced, before)


# --- batch track -----------------------------------------------------------------------


def test_a_batch_answers_per_item_and_a_retry_is_charged_once(priced: World) -> None:
    a, http = priced.a, priced.http
    before = {c: credits(priced, c) for c in ("alice", "bob")}
    body = {
        "items": [
            item("alice", 3, "a1"),
            item("bob", 2, "b1", id="image_generation"),
            item("alice", -1, "a2"),
            item("newcomer", 1, "n1"),
            item("bob", 1, "b2", id="no_such_thing"),
        ]
    }
    first = ok(http.post(BATCH, json=body, headers=a.api()))
    items = first["items"]
    assert [i["status"] for i in items] == [200, 200, 400, 200, 200]
    assert items[2] == {
        "status": 400,
        "replayed": False,
        "result": None,
        "error": {
            "code": "invalid_value",
            "message": items[2]["error"]["message"],
            "field": "value",
        },
    }
    assert items[0]["result"]["remaining"] == before["alice"] - 3
    assert items[1]["result"]["consumed"] == 10
    assert items[1]["result"]["entitlement_id"] == "image_generation"
    assert items[4]["result"]["error"] == "unknown_entitlement"
    assert set(items[0]["result"]) == {
        "success",
        "requested",
        "consumed",
        "remaining",
        "entitlement_id",
        "access_source_id",
        "error",
        "usage_event_id",
        "client_id",
        "action",
        "unit_price",
    }
    # Sent again (the client timed out): every applied item replays, nothing is charged.
    again = ok(http.post(BATCH, json=body, headers=a.api()))["items"]
    assert [i["replayed"] for i in again] == [True, True, False, True, True]
    assert [i["result"] for i in again] == [i["result"] for i in items]
    assert again[2]["error"]["code"] == "invalid_value"
    assert credits(priced, "alice") == before["alice"] - 3
    assert credits(priced, "bob") == before["bob"] - 10
    assert credits(priced, "newcomer") == 99
    assert_verified(priced.backend, a.app_id)


def test_a_full_batch_of_1000_over_http(priced: World) -> None:
    a, http = priced.a, priced.http
    long_key = "k" * 200
    body = {"items": [item(f"user-{i % 50:0200d}", 1, f"{long_key}{i:04d}") for i in range(1000)]}
    assert len(json.dumps(body)) > 64 * 1024  # more than any other body may be
    answer = ok(http.post(BATCH, json=body, headers=a.api()))
    assert len(answer["items"]) == 1000
    assert all(i["status"] == 200 and i["result"]["success"] for i in answer["items"])
    assert credits(priced, f"user-{0:0200d}") == 80
    assert_verified(priced.backend, a.app_id)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"items": []}, 400, "invalid_batch"),
        ({"items": [item("alice", 1, f"k{i}") for i in range(1001)]}, 400, "invalid_batch"),
        ({"items": [item("alice", 1, "k1"), item("alice", 1, None)]}, 400, "invalid_batch"),
        ({"items": [{"customer": "alice", "id": "credits", "value": 1}]}, 400, None),
        ({"items": [{**item("alice", 1, "k"), "extra": 1}]}, 400, None),
        ({"items": "all of them"}, 400, None),
        ({"items": [5]}, 400, None),
        ([item("alice", 1, "k")], 400, None),
        ({}, 400, None),
    ],
)
def test_a_malformed_batch_is_a_4xx_changing_nothing(
    priced: World, body: Any, status: int, code: str | None
) -> None:
    before = snapshot(priced)
    response = priced.http.post(BATCH, json=body, headers=priced.a.api())
    assert_error(response, status, code)
    assert_unchanged(priced, before)


def test_a_batch_needs_a_secret_key_and_stays_in_its_app(priced: World) -> None:
    http = priced.http
    body = {"items": [item("carol", 1, "c1")]}
    assert_error(http.post(BATCH, json=body), 401)
    assert_error(http.post(BATCH, json=body, headers=priced.a.client()), 401)
    before_b = credits_b = ok(http.get("/v1/customers/carol", headers=priced.b.api()))
    answer = ok(http.post(BATCH, json=body, headers=priced.a.api()))
    # carol of app A is a new customer of A: B's carol is untouched.
    assert answer["items"][0]["result"]["remaining"] == 99
    credits_b = ok(http.get("/v1/customers/carol", headers=priced.b.api()))
    assert credits_b == before_b


def test_a_batch_body_over_the_batch_limit_is_413(priced: World) -> None:
    body = {"items": [item("x" * 250, 1, "k" * 250) for _ in range(3000)]}
    before = snapshot(priced)
    response = priced.http.post(BATCH, json=body, headers=priced.a.api())
    assert_error(response, 413, "body_too_large")
    assert_unchanged(priced, before)
