"""Reservations never read a growing table from end to end (ADR 0013): the statements
of holds, replays, settles, releases, reads and a lazy expiry, each planned by SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from query_plans import growing_scans

from .conftest import World, ok
from .test_query_plans import GROWING, statements  # noqa: F401
from support import Clock


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_reservations_never_scan_a_growing_table(
    statements: list[str],  # noqa: F811
    world: World,
    database_url: str,
    clock: Clock,
) -> None:
    tenant, http = world.a, world.http
    alice = tenant.customers["alice"]
    statements.clear()
    for round_ in range(3):
        held = ok(
            http.post(
                "/v1/customers/alice/reservations",
                json={"id": "credits", "value": 5, "ttl_seconds": 60},
                headers=tenant.api() | {"Idempotency-Key": f"plans-{round_}"},
            )
        )
        ok(
            http.post(
                "/v1/customers/alice/reservations",
                json={"id": "credits", "value": 5, "ttl_seconds": 60},
                headers=tenant.api() | {"Idempotency-Key": f"plans-{round_}"},
            )
        )
        rid = held["reservation_id"]
        ok(http.get(f"/v1/reservations/{rid}", headers=tenant.api()))
        ok(http.post(f"/v1/reservations/{rid}/settle", json={"value": 7}, headers=tenant.api()))
        ok(http.post(f"/v1/reservations/{rid}/release", headers=tenant.api()))
        mine = ok(
            http.post(
                "/v1/customer/reservations",
                json={"entitlement_id": "credits", "client_id": alice.client_id, "value": 3},
                headers=tenant.as_customer("alice"),
            )
        )["reservation_id"]
        ok(
            http.post(
                f"/v1/customer/reservations/{mine}/release",
                json={"client_id": alice.client_id},
                headers=tenant.as_customer("alice"),
            )
        )
        ok(
            http.post(
                "/v1/customers/alice/reservations",
                json={"id": "credits", "value": 2, "ttl_seconds": 1},
                headers=tenant.api(),
            )
        )
        clock.advance(seconds=2)
        ok(http.get("/v1/customers/alice", headers=tenant.api()))  # the expiry, found late
    database = Path(database_url.removeprefix("sqlite:///"))
    queries = sorted(
        {
            s
            for s in statements
            if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"))
        }
    )
    # The trace saw the writes too: the hold, its entries, the closes, the expiry.
    for seen in ("INSERT INTO reservations", "UPDATE reservations", "AND state = 'held'"):
        assert any(seen in q for q in queries), (seen, queries)
    growing = GROWING | {"reservations"}
    problems = [
        f"{scans}\n  {query}"
        for query in queries
        if (scans := growing_scans(database, query, growing))
    ]
    assert not problems, "\n".join(problems)
