"""The SDK's reservations against a real `revenipe serve`: `async with reserve(...)`
holds on entry, settles what the block says, releases on an exception or when the block
ends unsettled, and refuses to enter when nothing can be held. The sync twin too.
"""

from __future__ import annotations

import asyncio

import pytest

from e2e.harness import Server, Servers, run_verify
from revenipe.client import (
    HoldRefusedError,
    Revenipe,
    RevenipeConfig,
    RevenipeServerClient,
    RevenipeSync,
)


class Boom(Exception):
    pass


def _config(server: Server) -> RevenipeConfig:
    backend = RevenipeServerClient(server.base_url, server.secret_key)
    return RevenipeConfig(
        app_id=server.app_id,
        base_url=server.base_url,
        customer_token_supplier=lambda customer: backend.mint_customer_token(customer).token,
    )


async def _async_flow(server: Server) -> None:
    async with Revenipe(_config(server)) as client:
        await client.login("writer")

        async def credits() -> int:
            await client.refresh_entitlements()
            key = client.get_usage_key("credits")
            assert key is not None
            return key.remaining

        async with client.reserve(id="credits", value=100) as hold:
            assert hold.result is not None and hold.result.held == 100
            assert await credits() == 0
            settled = await hold.settle(37)
        assert (settled.consumed, settled.released, settled.remaining) == (37, 63, 63)
        assert await credits() == 63

        with pytest.raises(Boom):
            async with client.reserve(id="credits", value=50, ttl_seconds=60) as hold:
                assert await credits() == 13
                raise Boom
        assert hold.closed is not None and hold.closed.released == 50
        assert await credits() == 63

        async with client.reserve(id="credits", value=10) as hold:
            pass  # ends without settle: released, never charged
        assert hold.closed is not None and hold.closed.consumed == 0
        assert await credits() == 63

        ran = False
        with pytest.raises(HoldRefusedError) as refused:
            async with client.reserve(id="credits", value=64):
                ran = True
        assert not ran
        assert (refused.value.error, refused.value.remaining) == ("insufficient_balance", 63)


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_the_async_context_manager_holds_settles_and_releases(servers: Servers) -> None:
    server = servers.start()
    asyncio.run(_async_flow(server))
    run_verify(server.database_url)


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_the_sync_twin(servers: Servers) -> None:
    server = servers.start()
    with RevenipeSync(_config(server)) as client:
        client.login("sync-writer")
        with client.reserve(id="monthly_credits", value=30) as hold:
            result = hold.settle(50)  # more than held: drawn like a track
        assert (result.consumed, result.shortfall, result.remaining) == (50, 0, 50)
        with pytest.raises(Boom), client.reserve(id="monthly_credits", value=50):
            raise Boom
        client.refresh_entitlements()
        monthly = client.get_entitlement("monthly_credits")
        assert monthly is not None and monthly.remaining == 50
    run_verify(server.database_url)


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_the_server_client(servers: Servers) -> None:
    server = servers.start()
    with RevenipeServerClient(server.base_url, server.secret_key) as backend:
        held = backend.hold("api-writer", "credits", 60, ttl_seconds=120, idempotency_key="k1")
        assert held["success"] and held["remaining"] == 40
        assert backend.hold("api-writer", "credits", 60, ttl_seconds=120, idempotency_key="k1") == (
            held
        )
        rid = held["reservation_id"]
        assert backend.get_reservation(rid)["state"] == "held"
        settled = backend.settle_reservation(rid, 45)
        assert (settled["consumed"], settled["released"], settled["remaining"]) == (45, 15, 55)
        assert backend.release_reservation(rid)["error"] == "reservation_closed"
        other = backend.hold("api-writer", "credits", 5)["reservation_id"]
        assert backend.release_reservation(other)["released"] == 5
        assert backend.get_reservation(other)["state"] == "released"
    run_verify(server.database_url)
