"""`Idempotency-Key` on the client track and the server API's track.

A retry with the same key and the same body is answered with the first answer, byte
for byte, marked `Idempotent-Replayed: true`, and spends nothing more. The same key
with another body is a 409 `idempotency_key_reused`. Keys belong to one customer:
the two surfaces share them (they name the same usage event), other customers and
other apps do not.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .conftest import World, assert_error, assert_unchanged, fingerprint, ok, snapshot
from support import assert_verified

REPLAYED = "Idempotent-Replayed"
Send = Callable[..., httpx.Response]


def client_track(world: World, customer: str = "alice") -> Send:
    tenant = world.a if customer in world.a.customers else world.b

    def send(key: str | None, value: int = 3, id: str = "credits", **extra: Any) -> httpx.Response:
        body = {
            "client_id": tenant.customers[customer].client_id,
            "entitlement_id": id,
            "value": value,
            **extra,
        }
        headers = tenant.as_customer(customer)
        if key is not None:
            headers["Idempotency-Key"] = key
        return world.http.post("/v1/customer/track", json=body, headers=headers)

    return send


def api_track(world: World, customer: str = "alice") -> Send:
    tenant = world.a if customer in world.a.customers else world.b

    def send(key: str | None, value: int = 3, id: str = "credits", **extra: Any) -> httpx.Response:
        headers = tenant.api()
        if key is not None:
            headers["Idempotency-Key"] = key
        return world.http.post(
            f"/v1/customers/{customer}/track",
            json={"id": id, "value": value, **extra},
            headers=headers,
        )

    return send


SURFACES = {"client": client_track, "api": api_track}


def credits(world: World, customer: str = "alice") -> int:
    tenant = world.a if customer in world.a.customers else world.b
    state = ok(world.http.get(f"/v1/customers/{customer}", headers=tenant.api()))
    (key,) = (k for k in state["usage_keys"] if k["key_id"] == "credits")
    remaining: int = key["remaining"]
    return remaining


def events(world: World, customer: str = "alice") -> list[dict[str, Any]]:
    tenant = world.a if customer in world.a.customers else world.b
    page = ok(world.http.get(f"/v1/usage_events?customer={customer}", headers=tenant.api()))
    found: list[dict[str, Any]] = page["usage_events"]
    return found


@pytest.mark.parametrize("surface", SURFACES)
def test_replay_returns_the_first_answer_and_spends_once(world: World, surface: str) -> None:
    send = SURFACES[surface](world)
    assert credits(world) == 160  # free 100 + welcome 10 + pack_50
    first = send("key-1")
    assert ok(first)["success"] is True and ok(first)["remaining"] == 157
    assert REPLAYED not in first.headers
    after_first = snapshot(world)
    for _ in range(3):
        again = send("key-1")
        assert again.status_code == 200
        assert again.content == first.content  # the identical body
        assert again.headers[REPLAYED] == "true"
    assert_unchanged(world, after_first)
    assert credits(world) == 157
    assert len(events(world)) == 1
    # Another key is another track.
    other = send("key-2")
    assert ok(other)["remaining"] == 154 and REPLAYED not in other.headers
    # No key: every request is a new track.
    send(None)
    send(None)
    assert credits(world) == 148
    assert_verified(world.backend)


@pytest.mark.parametrize("surface", SURFACES)
def test_same_key_with_another_body_is_a_conflict(world: World, surface: str) -> None:
    send = SURFACES[surface](world)
    alice = world.a.customers["alice"]
    first = send("key-1", value=3)
    ok(first)
    before = snapshot(world)
    last = fingerprint(world)
    for changed in (
        {"value": 4},
        {"value": 1},
        {"id": "monthly_credits"},
        {"id": "nope"},
        {"access_source_id": alice.sources["pack_50"]},
    ):
        response = send("key-1", **{"value": 3, **changed})
        error = assert_error(response, 409, "idempotency_key_reused")
        assert "key" in error["message"]
        assert REPLAYED not in response.headers
        assert fingerprint(world) == last, changed
    assert_unchanged(world, before)
    # The original request is still answered with the original answer.
    again = send("key-1", value=3)
    assert again.content == first.content and again.headers[REPLAYED] == "true"


@pytest.mark.parametrize("surface", SURFACES)
def test_a_refusal_is_replayed_too(world: World, surface: str) -> None:
    """A retry does not re-decide: a refused track stays refused under its key, even
    once the balance would allow it."""
    send = SURFACES[surface](world)
    refused = send("big", value=500)
    assert ok(refused)["success"] is False
    assert ok(refused)["error"] == "insufficient_balance"
    granted = world.http.post(
        "/v1/customers/alice/grants",
        json={"entitlement_id": "purchased_credits", "amount": 1000},
        headers=world.a.api(),
    )
    ok(granted, 201)
    before = snapshot(world)
    again = send("big", value=500)
    assert again.content == refused.content and again.headers[REPLAYED] == "true"
    assert_unchanged(world, before)
    assert ok(send("big-2", value=500))["success"] is True


def test_keys_are_per_customer_and_shared_across_surfaces(world: World) -> None:
    client_first = client_track(world)("shared", value=2)
    assert ok(client_first)["remaining"] == 158
    # The server API names the same customer: the same key is the same usage event.
    from_api = api_track(world)("shared", value=2)
    assert from_api.headers[REPLAYED] == "true"
    replay = ok(from_api)
    assert {k: replay[k] for k in ok(client_first)} == ok(client_first)
    assert replay["usage_event_id"] == events(world)[0]["usage_event_id"]
    assert replay["client_id"] == world.a.customers["alice"].client_id
    assert_error(api_track(world)("shared", value=5), 409, "idempotency_key_reused")
    assert credits(world) == 158
    # bob and carol (another app) have keys of their own.
    for customer in ("bob", "carol"):
        response = client_track(world, customer)("shared", value=5)
        assert ok(response)["success"] is True and REPLAYED not in response.headers
        assert credits(world, customer) == 105, customer
    assert credits(world) == 158
    assert_verified(world.backend)


@pytest.mark.parametrize("surface", SURFACES)
def test_concurrent_retries_spend_once(world: World, surface: str) -> None:
    send = SURFACES[surface](world)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: send("burst", value=7), range(6)))
    statuses = sorted(r.status_code for r in responses)
    bodies = {r.content for r in responses if r.status_code == 200}
    # Under contention a request may be told to retry (503 database_busy), never to spend.
    assert set(statuses) <= {200, 503}, [(r.status_code, r.text) for r in responses]
    assert statuses.count(200) >= 1 and len(bodies) == 1, bodies
    assert sum(REPLAYED not in r.headers for r in responses if r.status_code == 200) == 1
    assert credits(world) == 153
    assert len(events(world)) == 1
    assert_verified(world.backend)
