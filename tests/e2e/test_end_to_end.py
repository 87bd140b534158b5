"""The README's quick start end to end: a real `revenipe serve`, the Python SDK, raw HTTP,
verify.

docs/concepts/client-protocol.md#customer-tokens: the app's backend mints a customer
token with its secret key; the client SDK logs in with that token (its token supplier
hook), tracks, refreshes and reads its local state; the same flow then runs in raw HTTP
exactly as a mobile client sends it. Afterwards `revenipe verify` must find every ledger
invariant intact, and the server, still running, must keep its answers durable: what it
answers after that CLI command is in the database once the server stops.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

import revenipe
from e2e.harness import Server, Servers, mint_token, run_verify
from revenipe.client import (
    AsyncRevenipeServerClient,
    Revenipe,
    RevenipeConfig,
    RevenipeServerClient,
)
from revenipe.wire.customers import customer_to_wire

from support import assert_verified

PRODUCT_IDS = {"free", "pro", "pack_50", "welcome", "boost", "trial_plan"}


def test_seed_example_through_sdk_and_raw_http(servers: Servers) -> None:
    server = servers.start()
    asyncio.run(_sdk_flow(server, "user-42"))
    _raw_flow(server, "user-raw")
    run_verify(server.database_url)
    _durable_after_a_cli_command(servers, server)


async def _sdk_flow(server: Server, external_id: str) -> None:
    supplied: list[str] = []
    expiries: list[datetime] = []
    async with AsyncRevenipeServerClient(server.base_url, server.secret_key) as backend:

        async def supply_token(customer: str) -> str:
            # The first token is short-lived: the SDK must come back for a new one.
            supplied.append(customer)
            minted = await backend.mint_customer_token(
                customer, ttl_seconds=2 if len(supplied) == 1 else None
            )
            expiries.append(minted.expires_at)
            return minted.token

        config = RevenipeConfig(
            app_id=server.app_id, base_url=server.base_url, customer_token_supplier=supply_token
        )
        async with Revenipe(config) as client:
            customer = await client.login(external_id)
            assert supplied == [external_id]
            assert customer.client_id and customer.client_id != external_id
            assert client.client_id == customer.client_id
            assert client.is_logged_in

            # The free tier (default product): 100 monthly credits and HD export.
            monthly = client.get_entitlement("monthly_credits")
            assert monthly is not None and monthly.remaining == 100
            credits = client.get_usage_key("credits")
            assert credits is not None and credits.remaining == 100
            assert client.has_entitlement("monthly_credits")
            assert client.has_entitlement("export_hd")
            assert not client.has_entitlement("purchased_credits")
            assert [s.product_id for s in customer.subscriptions] == ["free"]
            assert [p.product_id for p in customer.base_plans] == ["free"]

            # The first token expires; the next call is answered 401, and the SDK asks
            # its supplier once more and sends the call again.
            await asyncio.sleep(max(0.0, (expiries[0] - datetime.now(UTC)).total_seconds()) + 0.1)

            # The README's track example: one credit per action.
            tracked = await client.track(id="monthly_credits", value=1)
            assert tracked.success is True
            assert (tracked.requested, tracked.consumed, tracked.remaining) == (1, 1, 99)
            assert tracked.entitlement_id == "monthly_credits"
            assert tracked.error is None
            assert tracked.access_source_id == monthly.access_source_id
            after = client.get_entitlement("monthly_credits")
            assert after is not None and after.remaining == 99

            tracked = await client.track(id="credits", value=1)
            assert tracked.success is True
            assert (tracked.requested, tracked.consumed, tracked.remaining) == (1, 1, 98)
            assert tracked.entitlement_id == "credits"
            key = client.get_usage_key("credits")
            assert key is not None and key.remaining == 98

            # Refusals are answers, and change nothing locally.
            before = client.customer
            for id, value, error in (
                ("credits", 1000, "insufficient_balance"),
                ("monthly_credits", 99, "insufficient_balance"),
                ("no_such_thing", 1, "unknown_entitlement"),
                ("export_hd", 1, "not_metered"),
                ("purchased_credits", 1, "no_access"),
            ):
                refused = await client.track(id=id, value=value)
                assert refused.success is False, (id, refused)
                assert refused.error == error, (id, refused)
                assert refused.consumed == 0
                assert refused.requested == value
                assert refused.entitlement_id == id
                assert client.customer == before, f"a refused track of {id} changed local state"

            # The backend grants a pack; refresh brings it (and exact balances) in.
            granted = await backend.grant_product(external_id, "pack_50")
            assert granted["client_id"] == customer.client_id
            assert not client.has_entitlement("purchased_credits")  # not refreshed yet
            refreshed = await client.refresh_entitlements()
            assert refreshed.client_id == customer.client_id
            assert client.customer == refreshed
            monthly = client.get_entitlement("monthly_credits")
            assert monthly is not None and monthly.remaining == 98
            pack = client.get_entitlement("purchased_credits")
            assert pack is not None and pack.remaining == 50
            assert pack.access_source_id == granted["access_source_id"]
            assert pack.expires_at is not None  # expires_after: P30D
            assert client.has_entitlement("purchased_credits")
            key = client.get_usage_key("credits")
            assert key is not None and key.remaining == 148

            # The usage key draws in its declared order: monthly credits first.
            tracked = await client.track(id="credits", value=100)
            assert (tracked.success, tracked.remaining) == (True, 48)
            refreshed = await client.refresh_entitlements()
            remaining = {e.entitlement_id: e.remaining for e in refreshed.entitlements}
            assert remaining["monthly_credits"] == 0
            assert remaining["purchased_credits"] == 48
            # A customer with 0 credits left still holds the entitlement.
            assert client.has_entitlement("monthly_credits")

            products = await client.get_products()
            by_id = {p.product_id: p for p in products}
            assert set(by_id) == PRODUCT_IDS
            assert (by_id["pro"].type, by_id["pro"].price) == ("subscription", 1000)
            assert by_id["pro"].recurring_interval == "month"
            assert (by_id["pack_50"].type, by_id["pack_50"].recurring_interval) == (
                "one_time",
                None,
            )
            assert [e.entitlement_id for e in by_id["free"].entitlements] == [
                "monthly_credits",
                "export_hd",
            ]

            # Two tokens in all: the expired one, then one reused for every later call.
            assert supplied == [external_id, external_id]

            client.clear_session()
            assert not client.is_logged_in
            assert client.get_entitlement("purchased_credits") is None
            assert not client.has_entitlement("export_hd")

    # The server's view agrees with what the SDK showed.
    with RevenipeServerClient(server.base_url, server.secret_key) as sync_backend:
        state = sync_backend.get_customer(external_id)
        assert {k["key_id"]: k["remaining"] for k in state["usage_keys"]} == {"credits": 48}
        events = sync_backend.list_usage_events(customer=external_id)
    outcomes = sorted((e["id"], e["success"], e["consumed"]) for e in events["usage_events"])
    assert outcomes == sorted(
        [
            ("monthly_credits", True, 1),
            ("credits", True, 1),
            ("credits", False, 0),
            ("monthly_credits", False, 0),
            ("no_such_thing", False, 0),
            ("export_hd", False, 0),
            ("purchased_credits", False, 0),
            ("credits", True, 100),
        ]
    )


def _raw_flow(server: Server, external_id: str) -> None:
    minted = mint_token(server, external_id)
    client_id = minted["client_id"]
    with server.client(minted["token"]) as http, server.api() as api:
        # Without the token (default policy `enforce`): refused, with a message.
        bare = httpx.post(
            f"{server.base_url}/v1/client/auth",
            json={"client_id": external_id},
            headers={"Authorization": server.app_id},
        )
        assert bare.status_code == 401
        assert bare.json()["code"] == "customer_token_required"
        assert isinstance(bare.json()["message"], str)

        login = http.post("/v1/client/auth", json={"client_id": external_id})
        assert login.status_code == 200, login.text
        customer = login.json()
        assert customer["client_id"] == client_id
        entry = _one(customer["entitlements"], "monthly_credits")
        assert entry["remaining"] == 100
        assert _key(customer, "credits") == 100
        # Logging in again returns the same customer.
        assert http.post("/v1/client/auth", json={"client_id": external_id}).json() == customer

        track = _track_body(client_id, "monthly_credits", entry["access_source_id"])
        first = http.post("/v1/customer/track", json=track, headers={"Idempotency-Key": "raw-1"})
        assert first.status_code == 200, first.text
        assert first.json() == {
            "success": True,
            "requested": 1,
            "consumed": 1,
            "remaining": 99,
            "entitlement_id": "monthly_credits",
            "access_source_id": entry["access_source_id"],
            "error": None,
        }
        replay = http.post("/v1/customer/track", json=track, headers={"Idempotency-Key": "raw-1"})
        assert replay.status_code == 200
        assert replay.json() == first.json()
        assert replay.headers.get("Idempotent-Replayed") == "true"
        reused = http.post(
            "/v1/customer/track",
            json={**track, "value": 2},
            headers={"Idempotency-Key": "raw-1"},
        )
        assert reused.status_code == 409
        assert reused.json()["code"] == "idempotency_key_reused"

        second = http.post(
            "/v1/customer/track",
            json=_track_body(client_id, "credits", None),
            headers={"Idempotency-Key": "raw-2"},
        )
        assert second.json() == {
            "success": True,
            "requested": 1,
            "consumed": 1,
            "remaining": 98,
            "entitlement_id": "credits",
            "access_source_id": None,
            "error": None,
        }

        refused = http.post(
            "/v1/customer/track", json={**_track_body(client_id, "credits", None), "value": 99}
        )
        assert refused.status_code == 200
        assert refused.json() == {
            "success": False,
            "requested": 99,
            "consumed": 0,
            "remaining": 98,
            "entitlement_id": "credits",
            "access_source_id": None,
            "error": "insufficient_balance",
        }

        refresh = http.post("/v1/customer/refresh_entitlements", json={"client_id": client_id})
        assert refresh.status_code == 200
        state = refresh.json()
        assert "client_id" not in state
        assert _one(state["entitlements"], "monthly_credits")["remaining"] == 98
        assert _key(state, "credits") == 98

        products = http.get("/v1/customer/app/products")
        assert products.status_code == 200
        assert {p["product_id"] for p in products.json()["products"]} == PRODUCT_IDS

        # This token acts for this customer only.
        other = mint_token(server, f"{external_id}-other")
        forbidden = http.post(
            "/v1/customer/refresh_entitlements", json={"client_id": other["client_id"]}
        )
        assert forbidden.status_code == 403
        assert isinstance(forbidden.json()["message"], str)
        spend = http.post(
            "/v1/customer/track", json=_track_body(other["client_id"], "credits", None)
        )
        assert spend.status_code == 403

        # The server API sees one event per distinct track, and a ledger that adds up.
        events = api.get("/v1/usage_events", params={"customer": external_id}).json()
        assert sorted(
            (e["id"], e["success"], e["consumed"], e["idempotency_key"])
            for e in events["usage_events"]
        ) == [
            ("credits", False, 0, None),
            ("credits", True, 1, "raw-2"),
            ("monthly_credits", True, 1, "raw-1"),
        ]
        ledger = api.get("/v1/ledger", params={"customer": external_id}).json()["entries"]
        consumed = [e for e in ledger if e["kind"] == "consumed"]
        assert sorted(e["amount"] for e in consumed) == [-1, -1]
        assert sum(e["amount"] for e in ledger) == 98
        assert api.get(f"/v1/customers/{external_id}").json()["usage_keys"] == [
            {"key_id": "credits", "name": "Credits", "remaining": 98}
        ]


def _durable_after_a_cli_command(servers: Servers, server: Server) -> None:
    """`revenipe verify` (or any CLI command) may run against the database while the
    server serves it; the server's later answers must still be durable
    (docs/concepts/track.md#durability): after the server stops, the database holds every
    answered track."""
    answered: dict[str, int] = {}
    with server.api() as api:
        for external_id in ("user-raw", "after-cli-0", "after-cli-1", "after-cli-2"):
            tracked = api.post(
                f"/v1/customers/{external_id}/track", json={"id": "credits", "value": 1}
            )
            assert tracked.status_code == 200, tracked.text
            assert tracked.json()["success"] is True, tracked.json()
            answered[external_id] = tracked.json()["remaining"]
    assert answered == {"user-raw": 97, "after-cli-0": 99, "after-cli-1": 99, "after-cli-2": 99}
    servers.stop_all()
    with revenipe.open(server.database_url) as backend:
        app = backend.app(server.app_id)
        stored: dict[str, int | None] = {}
        for external_id in answered:
            try:
                keys = customer_to_wire(app.state(external_id))["usage_keys"]
                stored[external_id] = next(k["remaining"] for k in keys if k["key_id"] == "credits")
            except revenipe.RevenipeError:
                stored[external_id] = None  # the customer is not in the database at all
        assert stored == answered, (
            "tracks answered after a CLI command ran against the database were lost "
            f"once the server stopped (None: customer missing): {stored}"
        )
        assert_verified(backend, server.app_id)


def _track_body(client_id: str, id: str, source: str | None) -> dict[str, Any]:
    return {"access_source_id": source, "entitlement_id": id, "client_id": client_id, "value": 1}


def _one(entitlements: list[dict[str, Any]], entitlement_id: str) -> dict[str, Any]:
    matching = [e for e in entitlements if e["entitlement_id"] == entitlement_id]
    assert len(matching) == 1, entitlements
    return matching[0]


def _key(state: dict[str, Any], key_id: str) -> int:
    remaining: int = next(k["remaining"] for k in state["usage_keys"] if k["key_id"] == key_id)
    return remaining
