"""Issue 15's acceptance for reservations, against real `revenipe serve` processes.

- 20 concurrent holds of 75 against a balance of 500 (over HTTP, 2 workers): exactly 6
  succeed; settling each at 50 leaves 200; `revenipe verify` passes. On PostgreSQL (the
  acceptance) and on SQLite.
- A hold that expires gives everything back without any request touching it first
  (shown by a state read after the TTL), and a later settle is refused
  `reservation_closed`.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from e2e.harness import Server, Servers, mint_token, run_verify
from e2e.test_http_concurrency import _release_together

HOLDS = 20
HOLD_VALUE = 75
BALANCE = 500
ENTITLEMENT = "purchased_credits"  # the catalog's default product grants none of it


def _grant(server: Server, external_id: str, amount: int) -> None:
    with server.api() as api:
        granted = api.post(
            f"/v1/customers/{external_id}/grants",
            json={"entitlement_id": ENTITLEMENT, "amount": amount},
        )
    assert granted.status_code == 201, granted.text


def _balance(server: Server, external_id: str) -> int:
    with server.api() as api:
        state = api.get(f"/v1/customers/{external_id}").json()
    return sum(e["remaining"] for e in state["entitlements"] if e["entitlement_id"] == ENTITLEMENT)


def _concurrent_holds_then_settles(server: Server) -> None:
    _grant(server, "racer", BALANCE)

    def client_for(_: int) -> httpx.Client:
        return server.api()

    def send(index: int, api: httpx.Client) -> httpx.Response:
        return api.post(
            "/v1/customers/racer/reservations",
            json={"id": ENTITLEMENT, "value": HOLD_VALUE},
            headers={"Idempotency-Key": f"hold-{index}"},
        )

    answers = _release_together(HOLDS, client_for, send)
    assert Counter(status for status, _ in answers) == {200: HOLDS}, answers
    won = [body for _, body in answers if body["success"]]
    lost = [body for _, body in answers if not body["success"]]
    assert len(won) == BALANCE // HOLD_VALUE == 6
    assert all(b["error"] == "insufficient_balance" and b["held"] == 0 for b in lost)
    # Each success saw a distinct balance after it: the holds were serialized.
    assert sorted(b["remaining"] for b in won) == [50, 125, 200, 275, 350, 425]
    assert _balance(server, "racer") == BALANCE - 6 * HOLD_VALUE

    def settle(index: int, api: httpx.Client) -> httpx.Response:
        rid = won[index]["reservation_id"]
        return api.post(f"/v1/reservations/{rid}/settle", json={"value": 50})

    settled = _release_together(len(won), client_for, settle)
    assert all(status == 200 and body["consumed"] == 50 for status, body in settled), settled
    assert all(body["released"] == 25 and body["shortfall"] == 0 for _, body in settled)
    assert _balance(server, "racer") == BALANCE - 6 * 50 == 200
    run_verify(server.database_url)


@pytest.mark.parametrize("e2e_database", ["postgresql"], indirect=True)
def test_twenty_holds_of_75_against_500_on_two_postgresql_workers(servers: Servers) -> None:
    _concurrent_holds_then_settles(servers.start(workers=2))


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_twenty_holds_of_75_against_500_on_two_sqlite_workers(servers: Servers) -> None:
    _concurrent_holds_then_settles(servers.start(workers=2))


@pytest.mark.parametrize("e2e_database", ["postgresql"], indirect=True)
def test_an_expired_hold_is_given_back_by_a_state_read(servers: Servers) -> None:
    server = servers.start(workers=2)
    _grant(server, "sleeper", 100)
    with server.api() as api:
        held: dict[str, Any] = api.post(
            "/v1/customers/sleeper/reservations",
            json={"id": ENTITLEMENT, "value": 100, "ttl_seconds": 1},
        ).json()
    assert held["success"] and held["remaining"] == 0
    assert _balance(server, "sleeper") == 0
    time.sleep(1.2)
    # Nothing has touched the reservation: a read of the customer's state gives it back.
    assert _balance(server, "sleeper") == 100
    with server.api() as api:
        shown = api.get(f"/v1/reservations/{held['reservation_id']}").json()
        refused = api.post(
            f"/v1/reservations/{held['reservation_id']}/settle", json={"value": 10}
        ).json()
    assert (shown["state"], shown["released"]) == ("expired", 100)
    assert (refused["success"], refused["error"]) == (False, "reservation_closed")
    assert _balance(server, "sleeper") == 100
    run_verify(server.database_url)


@pytest.mark.parametrize("e2e_database", ["postgresql"], indirect=True)
def test_two_processes_holding_settling_and_releasing_never_lose_a_unit(
    servers: Servers,
) -> None:
    """32 threads over two server processes on one PostgreSQL, half through the client
    protocol (customer token), half through the server API: each holds, then settles
    (less, more, 0) or releases. What is left is what was granted minus what the
    answers consumed; the ledger verifies."""
    first = servers.start()
    targets = [first, servers.start(reuse=first)]
    _grant(first, "mixer", 400)
    minted = mint_token(first, "mixer")

    def client_for(index: int) -> httpx.Client:
        server = targets[index % 2]
        return server.client(minted["token"]) if index % 4 < 2 else server.api()

    def send(index: int, http: httpx.Client) -> httpx.Response:
        protocol = index % 4 < 2
        value = 10 + index
        if protocol:
            held = http.post(
                "/v1/customer/reservations",
                json={
                    "entitlement_id": ENTITLEMENT,
                    "client_id": minted["client_id"],
                    "value": value,
                },
            ).json()
        else:
            held = http.post(
                "/v1/customers/mixer/reservations", json={"id": ENTITLEMENT, "value": value}
            ).json()
        if not held["success"]:
            return http.get("/v1/health")
        rid = held["reservation_id"]
        prefix = "/v1/customer/reservations" if protocol else "/v1/reservations"
        owner = {"client_id": minted["client_id"]} if protocol else {}
        if index % 3 == 0:
            return http.post(f"{prefix}/{rid}/release", json=owner or None)
        settle_value = [0, value // 2, value * 2][index % 3]
        return http.post(f"{prefix}/{rid}/settle", json={**owner, "value": settle_value})

    answers = _release_together(32, client_for, send)
    assert all(status == 200 for status, _ in answers), answers
    consumed = sum(body.get("consumed", 0) for _, body in answers if isinstance(body, dict))
    assert _balance(first, "mixer") == 400 - consumed >= 0
    run_verify(first.database_url)
