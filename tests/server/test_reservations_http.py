"""Reservations over HTTP (in-process server, SQLite and PostgreSQL): the server API's
exact shapes, replays, refusals as answers, bad input as 4xx that changes nothing, and
the client protocol's extension where a customer reaches only its own reservations.

alice (app A) holds 160 credits: 100 monthly, 10 bonus, 50 purchased."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from revenipe.storage.schema import reservations
from server.conftest import World, assert_error, fingerprint, ok

from support import Clock, assert_verified

HOLD_KEYS = {"success", "reservation_id", "held", "remaining", "expires_at", "error"}
SETTLE_KEYS = {"success", "consumed", "released", "shortfall", "remaining", "usage_event_id"}
SETTLE_KEYS |= {"error"}


def hold(
    world: World, body: dict[str, Any], key: str | None = None, customer: str = "alice"
) -> Any:
    headers = {**world.a.api(), **({"Idempotency-Key": key} if key else {})}
    response = world.http.post(f"/v1/customers/{customer}/reservations", json=body, headers=headers)
    return response


def credits(world: World, customer: str = "alice") -> int:
    state = ok(world.http.get(f"/v1/customers/{customer}", headers=world.a.api()))
    return int(next(k["remaining"] for k in state["usage_keys"] if k["key_id"] == "credits"))


def reservation_count(world: World) -> int:
    """The reservations of both apps (the PostgreSQL database is shared by tests)."""
    query = select(func.count()).where(reservations.c.app_id.in_([world.a.app_id, world.b.app_id]))
    with world.backend.database.read() as conn:
        return int(conn.execute(query).scalar_one())


def test_hold_settle_release_and_read_over_the_server_api(world: World) -> None:
    held = ok(hold(world, {"id": "credits", "value": 120, "ttl_seconds": 300}))
    assert held.keys() == HOLD_KEYS
    assert held["success"] and held["held"] == 120 and held["remaining"] == 40
    assert held["expires_at"].endswith("Z") and held["error"] is None
    rid = held["reservation_id"]
    assert credits(world) == 40
    shown = ok(world.http.get(f"/v1/reservations/{rid}", headers=world.a.api()))
    assert (shown["state"], shown["held"], shown["id"], shown["closed_at"]) == (
        "held",
        120,
        "credits",
        None,
    )
    settled = world.http.post(
        f"/v1/reservations/{rid}/settle", json={"value": 100}, headers=world.a.api()
    )
    body = ok(settled)
    assert body.keys() == SETTLE_KEYS and "Idempotent-Replayed" not in settled.headers
    assert (body["success"], body["consumed"], body["released"], body["shortfall"]) == (
        True,
        100,
        20,
        0,
    )
    assert body["remaining"] == 60 == credits(world)
    again = world.http.post(
        f"/v1/reservations/{rid}/settle", json={"value": 100}, headers=world.a.api()
    )
    assert ok(again) == body and again.headers["Idempotent-Replayed"] == "true"
    closed = ok(world.http.post(f"/v1/reservations/{rid}/release", headers=world.a.api()))
    assert (closed["success"], closed["error"], closed["consumed"]) == (
        False,
        "reservation_closed",
        0,
    )
    event = ok(
        world.http.get("/v1/usage_events", params={"customer": "alice"}, headers=world.a.api())
    )
    assert event["usage_events"][0]["usage_event_id"] == body["usage_event_id"]
    second = ok(hold(world, {"id": "purchased_credits", "value": 10}))
    released = ok(
        world.http.post(
            f"/v1/reservations/{second['reservation_id']}/release", headers=world.a.api()
        )
    )
    assert (released["consumed"], released["released"], released["usage_event_id"]) == (0, 10, None)
    assert credits(world) == 60
    assert_verified(world.backend)


def test_a_refused_hold_is_an_answer_and_holds_nothing(world: World) -> None:
    before = fingerprint(world)
    refused = ok(hold(world, {"id": "credits", "value": 161}))
    assert refused == {
        "success": False,
        "reservation_id": None,
        "held": 0,
        "remaining": 160,
        "expires_at": None,
        "error": "insufficient_balance",
    }
    assert ok(hold(world, {"id": "export_hd", "value": 1}))["error"] == "not_metered"
    assert ok(hold(world, {"id": "unknown", "value": 1}))["error"] == "unknown_entitlement"
    assert fingerprint(world) == before and reservation_count(world) == 0


def test_the_idempotency_key_replays_a_hold(world: World) -> None:
    first = hold(world, {"id": "credits", "value": 30}, key="job-7")
    again = hold(world, {"id": "credits", "value": 30}, key="job-7")
    assert ok(first) == ok(again) and again.headers["Idempotent-Replayed"] == "true"
    assert credits(world) == 130
    assert_error(
        hold(world, {"id": "credits", "value": 31}, key="job-7"), 409, "idempotency_key_reused"
    )


BAD_HOLDS: list[dict[str, Any]] = [
    {"id": "credits", "value": 0},
    {"id": "credits", "value": -1},
    {"id": "credits", "value": 1.5},
    {"id": "credits", "value": 1.0},
    {"id": "credits", "value": "5"},
    {"id": "credits", "value": True},
    {"id": "credits", "value": None},
    {"id": "credits", "value": 2**53},
    {"id": "credits", "value": 10**40},
    {"id": "credits"},
    {"value": 5},
    {"id": 5, "value": 5},
    {"id": "", "value": 5},
    {"id": "credits", "value": 5, "ttl_seconds": 0},
    {"id": "credits", "value": 5, "ttl_seconds": -1},
    {"id": "credits", "value": 5, "ttl_seconds": 86_401},
    {"id": "credits", "value": 5, "ttl_seconds": 10**30},
    {"id": "credits", "value": 5, "ttl_seconds": 1.5},
    {"id": "credits", "value": 5, "ttl_seconds": "60"},
    {"id": "credits", "value": 5, "ttl_seconds": True},
    {"id": "credits", "value": 5, "access_source_id": 5},
    {"id": "credits", "value": 5, "extra": 1},
]


def test_bad_input_is_a_4xx_that_changes_nothing(world: World) -> None:
    rid = ok(hold(world, {"id": "credits", "value": 10}))["reservation_id"]
    before = fingerprint(world)
    for body in BAD_HOLDS:
        response = hold(world, body)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert_error(response, 400)
    for value in [-1, 1.5, "5", True, None, 2**53, [1]]:
        response = world.http.post(
            f"/v1/reservations/{rid}/settle", json={"value": value}, headers=world.a.api()
        )
        assert_error(response, 400)
    assert_error(
        world.http.post(f"/v1/reservations/{rid}/settle", json={}, headers=world.a.api()), 400
    )
    for unknown in ["res_0000000000000000000000000", "x" * 300, "%00"]:
        for response in (
            world.http.post(
                f"/v1/reservations/{unknown}/settle", json={"value": 1}, headers=world.a.api()
            ),
            world.http.post(f"/v1/reservations/{unknown}/release", headers=world.a.api()),
            world.http.get(f"/v1/reservations/{unknown}", headers=world.a.api()),
        ):
            assert response.status_code in (400, 404), response.text
    assert fingerprint(world) == before and reservation_count(world) == 1
    assert_verified(world.backend)


def test_another_apps_reservation_is_not_found(world: World) -> None:
    rid = ok(hold(world, {"id": "credits", "value": 10}))["reservation_id"]
    unknown = world.http.get(
        "/v1/reservations/res_0000000000000000000000000", headers=world.b.api()
    )
    other = world.http.get(f"/v1/reservations/{rid}", headers=world.b.api())
    assert_error(other, 404, "reservation_not_found")
    assert other.json()["code"] == unknown.json()["code"]
    assert_error(
        world.http.post(f"/v1/reservations/{rid}/settle", json={"value": 1}, headers=world.b.api()),
        404,
        "reservation_not_found",
    )
    assert_error(world.http.post(f"/v1/reservations/{rid}/release", headers=world.b.api()), 404)
    assert_error(world.http.get(f"/v1/reservations/{rid}"), 401)
    assert credits(world) == 150


def test_a_customer_reaches_only_its_own_reservations(world: World) -> None:
    alice, bob = world.a.customers["alice"], world.a.customers["bob"]
    held = world.http.post(
        "/v1/customer/reservations",
        json={"entitlement_id": "credits", "client_id": alice.client_id, "value": 60},
        headers={**world.a.as_customer("alice"), "Idempotency-Key": "gen-1"},
    )
    body = ok(held)
    assert body.keys() == HOLD_KEYS and body["remaining"] == 100
    rid = body["reservation_id"]
    shown = ok(
        world.http.get(
            f"/v1/customer/reservations/{rid}",
            params={"client_id": alice.client_id},
            headers=world.a.as_customer("alice"),
        )
    )
    assert shown["state"] == "held" and shown["client_id"] == alice.client_id
    # bob, with his own token, naming himself: exactly as for an unknown id.
    as_bob = world.a.as_customer("bob")
    for path in (rid, "res_0000000000000000000000000"):
        responses = [
            world.http.post(
                f"/v1/customer/reservations/{path}/settle",
                json={"client_id": bob.client_id, "value": 1},
                headers=as_bob,
            ),
            world.http.post(
                f"/v1/customer/reservations/{path}/release",
                json={"client_id": bob.client_id},
                headers=as_bob,
            ),
            world.http.get(
                f"/v1/customer/reservations/{path}",
                params={"client_id": bob.client_id},
                headers=as_bob,
            ),
        ]
        for response in responses:
            assert_error(response, 404, "reservation_not_found")
    # bob naming alice: his token is not hers.
    response = world.http.post(
        f"/v1/customer/reservations/{rid}/release",
        json={"client_id": alice.client_id},
        headers=as_bob,
    )
    assert response.status_code in (401, 403), response.text
    settled = ok(
        world.http.post(
            f"/v1/customer/reservations/{rid}/settle",
            json={"client_id": alice.client_id, "value": 45},
            headers=world.a.as_customer("alice"),
        )
    )
    assert (settled["consumed"], settled["released"], settled["remaining"]) == (45, 15, 115)
    assert credits(world) == 115 and credits(world, "bob") == 110
    assert_verified(world.backend)


@pytest.mark.parametrize("ttl", [1, 5])
def test_an_expired_hold_reads_given_back_and_refuses_a_settle(
    world: World, clock: Clock, ttl: int
) -> None:
    rid = ok(hold(world, {"id": "credits", "value": 160, "ttl_seconds": ttl}))["reservation_id"]
    assert credits(world) == 0
    clock.advance(seconds=ttl)
    assert credits(world) == 160  # the state read alone gives it back
    shown = ok(world.http.get(f"/v1/reservations/{rid}", headers=world.a.api()))
    assert (shown["state"], shown["released"]) == ("expired", 160)
    refused = ok(
        world.http.post(f"/v1/reservations/{rid}/settle", json={"value": 5}, headers=world.a.api())
    )
    assert (refused["success"], refused["error"], refused["remaining"]) == (
        False,
        "reservation_closed",
        160,
    )
    assert credits(world) == 160
    assert_verified(world.backend)


@pytest.mark.parametrize(("ttl", "expected"), [(10, 1000 + 500), (3600, 1000 + 400)])
def test_a_hold_around_a_sandbox_renewal(world: World, ttl: int, expected: int) -> None:
    """A hold of 600 of a sandbox Pro subscription's 1000 (up to 500 carried at each
    renewal), made 30 s before the renewal. Expiring before it (10 s), the 600 are back
    for the renewal's rollover: 1500. Expiring after it (1 h), they were held across
    the period's end and do not come back: 1400, as if consumed and nothing more."""
    from server.conftest import subscribe

    source = subscribe(world.http, world.a, "bob", "pro")
    api = world.a.api()
    state = ok(world.http.get("/v1/customers/bob", headers=api))
    (pro,) = [s for s in state["subscriptions"] if s["product_id"] == "pro"]
    renews_at = datetime.fromisoformat(pro["renews_at"].replace("Z", "+00:00"))
    clock = ok(world.http.get("/v1/sandbox/clock", headers=api))
    now = datetime.fromisoformat(clock["now"].replace("Z", "+00:00"))
    seconds = int((renews_at - now).total_seconds()) - 30
    ok(world.http.post("/v1/sandbox/clock/advance", json={"seconds": seconds}, headers=api))
    held = ok(
        hold(
            world,
            {"id": "monthly_credits", "value": 600, "ttl_seconds": ttl, "access_source_id": source},
            customer="bob",
        )
    )
    assert held["success"] and held["remaining"] == 400
    ok(world.http.post("/v1/sandbox/clock/advance", json={"hours": 2}, headers=api))
    state = ok(world.http.get("/v1/customers/bob", headers=api))
    balances = [e["remaining"] for e in state["entitlements"] if e["access_source_id"] == source]
    assert balances == [expected]
    shown = ok(world.http.get(f"/v1/reservations/{held['reservation_id']}", headers=api))
    assert shown["state"] == "expired"
    assert_verified(world.backend)
