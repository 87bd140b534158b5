"""No request that apps make at volume reads a growing table from end to end.

The 30-minute soak of 2026-12-03 found a reversal that read the whole ledger
(`reversed_per_grant` joined reversals to ledger entries with no index on
`ledger_entries.reversal_id`): its cost grew with the app's history, and on SQLite,
where it runs holding the write lock, every write waited behind it. A timed test would
be noisy; SQLite's query plan is not. This test records every statement the server runs
(SQLite's trace callback gives them with their values) while it serves the soak's mix
(tracks on both surfaces, replays, checks, reversals, refreshes, logins, product lists,
grants, customer state, a sandbox purchase, a page of the ledger), then asks SQLite for
each statement's plan: a full `SCAN` of a table that grows with customers or history
fails the test, with the statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from query_plans import growing_scans, traced_statements

from .conftest import World, ok, subscribe

# Tables whose size grows with customers or with history. (apps, catalog versions,
# secret keys and settings stay small: a scan of them is not a cost that grows.)
GROWING = {
    "customers",
    "access_sources",
    "grants",
    "usage_events",
    "reversals",
    "ledger_entries",
    "purchase_attempts",
    "webhook_events",
    "subscription_changes",
}


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement run on any SQLite connection opened while the test runs."""
    with traced_statements() as seen:
        yield seen


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_soak_mix_never_scans_a_growing_table(
    statements: list[str], world: World, database_url: str
) -> None:
    tenant = world.a
    alice = tenant.customers["alice"]
    http = world.http
    statements.clear()  # what building the world ran is not the mix under test
    for round_ in range(3):
        key = f"plans-{uuid.uuid4().hex}"
        body = {"client_id": alice.client_id, "entitlement_id": "credits", "value": 1}
        protocol = tenant.as_customer("alice") | {"Idempotency-Key": key}
        ok(http.post("/v1/customer/track", json=body, headers=protocol))
        ok(http.post("/v1/customer/track", json=body, headers=protocol))  # a replay
        tracked = ok(
            http.post(
                "/v1/customers/alice/track",
                json={"id": "purchased_credits", "value": 2},
                headers=tenant.api() | {"Idempotency-Key": f"plans-{uuid.uuid4().hex}"},
            )
        )
        reversal = f"/v1/usage_events/{tracked['usage_event_id']}/reversals"
        ok(http.post(reversal, json={"amount": 1}, headers=tenant.api()), 201)
        ok(http.post(reversal, json={}, headers=tenant.api()), 201)
        ok(
            http.post(
                "/v1/customers/alice/check",
                json={"id": "credits", "value": 2},
                headers=tenant.api(),
            )
        )
        ok(
            http.post(
                "/v1/customer/refresh_entitlements",
                json={"client_id": alice.client_id},
                headers=tenant.as_customer("alice"),
            )
        )
        ok(
            http.post(
                "/v1/client/auth", json={"client_id": "alice"}, headers=tenant.as_customer("alice")
            )
        )
        ok(http.get("/v1/customer/app/products", headers=tenant.client()))
        newcomer = f"plans-new-{round_}"
        ok(
            http.post(
                f"/v1/customers/{newcomer}/grants",
                json={"product_id": "pack_50"},
                headers=tenant.api(),
            ),
            201,
        )
        ok(http.get("/v1/customers/alice", headers=tenant.api()))
        ok(http.get("/v1/usage_events", params={"limit": "10"}, headers=tenant.api()))
        ok(http.get("/v1/customers", params={"limit": "10"}, headers=tenant.api()))
        for params in ({"limit": "10"}, {"limit": "10", "customer": "alice"}):
            ok(http.get("/v1/ledger", params=params, headers=tenant.api()))
            ok(http.get("/v1/usage_events", params=params, headers=tenant.api()))
    subscribe(http, tenant, "bob", "pro")

    database = Path(database_url.removeprefix("sqlite:///"))
    queries = sorted(
        {
            s
            for s in statements
            if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"))
        }
    )
    assert len(queries) > 20, queries  # the trace saw the mix
    problems = [
        f"{scans}\n  {query}"
        for query in queries
        for scans in [growing_scans(database, query, GROWING)]
        if scans
    ]
    assert not problems, "\n".join(problems)
