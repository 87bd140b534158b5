"""Track under real HTTP concurrency, across server processes, and retries after time-outs.

docs/concepts/track.md#concurrency: any number of concurrent tracks, from any number of
server processes, never consume more than was granted and never refuse a track that
fit; a track retried with its idempotency key is applied once and answered as the first
would have been. Here the tracks come over HTTP from 64 threads released together,
against two `revenipe serve` processes on one PostgreSQL database (or one server with
two worker processes on SQLite), and the ledger is verified afterwards. The same
servers then take 16 copies of one track (one idempotency key) at once, and 16 first
tracks of a customer nobody has seen yet (created once, default grants given once).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from e2e.harness import Server, Servers, mint_token, run_verify
from revenipe.client import RevenipeConfig, RevenipeSync

TRACKS = 64
BALANCE = 40
ENTITLEMENT = "purchased_credits"  # the catalog's default product grants none of it


def _grant_balance(server: Server, external_id: str) -> dict[str, Any]:
    with server.api() as api:
        granted = api.post(
            f"/v1/customers/{external_id}/grants",
            json={"entitlement_id": ENTITLEMENT, "amount": BALANCE},
        )
    assert granted.status_code == 201, granted.text
    body: dict[str, Any] = granted.json()
    return body


def _balance(server: Server, external_id: str) -> int:
    with server.api() as api:
        state = api.get(f"/v1/customers/{external_id}").json()
    return sum(e["remaining"] for e in state["entitlements"] if e["entitlement_id"] == ENTITLEMENT)


Answer = tuple[int, Any]  # (HTTP status, decoded JSON body or raw text)


def _release_together(
    count: int,
    client_for: Callable[[int], httpx.Client],
    send: Callable[[int, httpx.Client], httpx.Response],
) -> list[Answer]:
    """`count` requests from as many threads, each connected first, then released at
    once by a barrier; the answers in request order. Fails if any got no answer."""
    barrier = threading.Barrier(count, timeout=60)
    answers: list[Answer | BaseException | None] = [None] * count

    def run(index: int) -> None:
        try:
            with client_for(index) as http:
                http.get("/v1/health")  # connect before the release
                barrier.wait()
                response = send(index, http)
                answers[index] = (response.status_code, _json_or_text(response))
        except BaseException as exc:
            answers[index] = exc
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    missing = [a for a in answers if not isinstance(a, tuple)]
    assert not missing, f"{len(missing)} request(s) got no answer: {missing[:3]}"
    return [a for a in answers if isinstance(a, tuple)]


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _tracker(
    targets: list[Server], external_id: str, id: str, value: int, key: Callable[[int], str] | None
) -> tuple[Callable[[int], httpx.Client], Callable[[int, httpx.Client], httpx.Response]]:
    """Clients and a sender for tracks that alternate over `targets` and over the two
    surfaces: the client protocol (customer token) and the server API (secret key)."""
    minted = mint_token(targets[0], external_id)

    def via_protocol(index: int) -> bool:
        return (index // len(targets)) % 2 == 0

    def client_for(index: int) -> httpx.Client:
        server = targets[index % len(targets)]
        return server.client(minted["token"]) if via_protocol(index) else server.api()

    def send(index: int, http: httpx.Client) -> httpx.Response:
        headers = {"Idempotency-Key": key(index)} if key else None
        if via_protocol(index):
            body = {
                "access_source_id": None,
                "entitlement_id": id,
                "client_id": minted["client_id"],
                "value": value,
            }
            return http.post("/v1/customer/track", json=body, headers=headers)
        return http.post(
            f"/v1/customers/{external_id}/track", json={"id": id, "value": value}, headers=headers
        )

    return client_for, send


def _track_concurrently(targets: list[Server], external_id: str) -> list[Answer]:
    """TRACKS tracks of value 1 (each with its own idempotency key), released together."""
    client_for, send = _tracker(targets, external_id, ENTITLEMENT, 1, lambda i: f"conc-{i}")
    return _release_together(TRACKS, client_for, send)


def _assert_exactly_the_balance_was_spent(
    server: Server, external_id: str, answers: list[Answer]
) -> None:
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: TRACKS}, (statuses, [a for s, a in answers if s != 200][:3])
    outcomes = Counter((a["success"], a["error"]) for _, a in answers)
    assert outcomes == {(True, None): BALANCE, (False, "insufficient_balance"): TRACKS - BALANCE}
    # Each success saw a distinct balance after it: the tracks were serialized.
    assert sorted(a["remaining"] for _, a in answers if a["success"]) == list(range(BALANCE))
    assert all(a["consumed"] == 0 and a["remaining"] == 0 for _, a in answers if not a["success"])
    assert _balance(server, external_id) == 0
    with server.api() as api:
        events = api.get(
            "/v1/usage_events", params={"customer": external_id, "limit": 1000}
        ).json()["usage_events"]
        ledger = api.get("/v1/ledger", params={"customer": external_id}).json()["entries"]
    assert len(events) == TRACKS
    assert sum(e["consumed"] for e in events) == BALANCE
    consumed = [e for e in ledger if e["kind"] == "consumed"]
    assert len(consumed) == BALANCE and sum(e["amount"] for e in consumed) == -BALANCE


def _same_key_concurrently(targets: list[Server], external_id: str) -> None:
    """16 copies of one track (one idempotency key), released together over `targets`
    and both surfaces: applied once, and every copy gets the same answer."""
    _grant_balance(targets[0], external_id)
    client_for, send = _tracker(targets, external_id, ENTITLEMENT, 3, lambda _: "one-key")
    answers = _release_together(16, client_for, send)
    expected = {
        "success": True,
        "requested": 3,
        "consumed": 3,
        "remaining": BALANCE - 3,
        "entitlement_id": ENTITLEMENT,
        "access_source_id": None,
        "error": None,
    }
    # The server API adds fields of its own: compare the protocol's seven.
    assert [(status, {k: a.get(k) for k in expected}) for status, a in answers] == [
        (200, expected)
    ] * 16, answers
    assert _balance(targets[-1], external_id) == BALANCE - 3
    with targets[-1].api() as api:
        events = api.get("/v1/usage_events", params={"customer": external_id}).json()
    assert len(events["usage_events"]) == 1


def _first_contact_concurrently(targets: list[Server], external_id: str) -> None:
    """16 server-API tracks for a customer nobody has seen yet, released together over
    `targets`: the customer is created once, with its default grants given once.

    On PostgreSQL the test holds a SHARE lock on `access_sources` meanwhile, so the first
    transaction stops right after inserting the customer (before its default grants) and
    every other one reaches its own customer insert behind it: the race of a first
    contact, made certain instead of likely. The lock goes once all 16 are waiting."""

    def client_for(index: int) -> httpx.Client:
        return targets[index % len(targets)].api()

    def send(_: int, api: httpx.Client) -> httpx.Response:
        return api.post(
            f"/v1/customers/{external_id}/track", json={"id": "monthly_credits", "value": 1}
        )

    with _grants_held_up(targets[0].database_url, waiters=16):
        answers = _release_together(16, client_for, send)
    failed = [a for a in answers if a[0] != 200]
    assert not failed, (
        f"{len(failed)} of 16 concurrent first-contact tracks failed: {failed[:2]}\n"
        + "\n".join(server.describe() for server in targets)
    )
    assert len({a["client_id"] for _, a in answers}) == 1, "one customer, created once"
    # The free tier's 100 monthly credits, granted once: 16 successes down to 84.
    assert sorted(a["remaining"] for _, a in answers if a["success"]) == list(range(84, 100))
    with targets[-1].api() as api:
        state = api.get(f"/v1/customers/{external_id}").json()
    monthly = [e for e in state["entitlements"] if e["entitlement_id"] == "monthly_credits"]
    assert [e["remaining"] for e in monthly] == [84], state["entitlements"]
    assert [s["product_id"] for s in state["subscriptions"]] == ["free"]


@contextmanager
def _grants_held_up(database_url: str, waiters: int) -> Iterator[None]:
    """PostgreSQL: block inserts into `access_sources` until `waiters` transactions wait
    on a lock (or 15 s pass), from a thread, while the body runs. SQLite serializes whole
    write transactions: nothing to do."""
    if database_url.startswith("sqlite"):
        yield
        return
    conn = psycopg.connect(database_url)
    conn.execute("LOCK TABLE access_sources IN SHARE MODE")

    def release_when_all_wait() -> None:
        deadline = time.monotonic() + 15
        with psycopg.connect(database_url, autocommit=True) as watcher:
            while time.monotonic() < deadline:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if row is not None and row[0] >= waiters:
                    break
                time.sleep(0.05)
        conn.rollback()
        conn.close()

    releaser = threading.Thread(target=release_when_all_wait)
    releaser.start()
    try:
        yield
    finally:
        releaser.join(timeout=30)


@pytest.mark.parametrize("e2e_database", ["postgresql"], indirect=True)
def test_two_server_processes_on_postgresql_never_overspend(servers: Servers) -> None:
    # The second process starts once the first has created the app on the empty
    # database (it prints the app id), and serves that same app.
    first = servers.launch(workers=1)
    second = servers.launch(workers=1, reuse=first)
    servers.wait_healthy(first)
    servers.wait_healthy(second)
    _grant_balance(first, "conc-user")
    answers = _track_concurrently([first, second], "conc-user")
    _assert_exactly_the_balance_was_spent(second, "conc-user", answers)
    _same_key_concurrently([first, second], "same-key-user")
    run_verify(first.database_url)
    _first_contact_concurrently([first, second], "fresh-user")


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_two_workers_on_sqlite_never_overspend(servers: Servers) -> None:
    server = servers.start(workers=2)
    _grant_balance(server, "conc-user")
    answers = _track_concurrently([server], "conc-user")
    _assert_exactly_the_balance_was_spent(server, "conc-user", answers)
    _same_key_concurrently([server], "same-key-user")
    _first_contact_concurrently([server], "fresh-user")
    # Last: on SQLite a CLI process's exit may unlink the WAL under a running server
    # (see test_end_to_end), which would make later requests of this test fail.
    run_verify(server.database_url)


@contextmanager
def _server_held_up(database_url: str, customer_id: str) -> Iterator[threading.Event]:
    """Blocks every write for `customer_id` until the yielded event is set: a row lock
    on the customer (PostgreSQL) or the database's write lock (SQLite)."""
    release = threading.Event()
    if database_url.startswith("sqlite"):
        conn: Any = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
        )
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn = psycopg.connect(database_url)
        locked = conn.execute(
            "SELECT id FROM customers WHERE id = %s FOR UPDATE", (customer_id,)
        ).fetchall()
        assert locked == [(customer_id,)]

    def hold() -> None:
        release.wait(timeout=30)
        conn.rollback()
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        yield release
    finally:
        release.set()
        holder.join(timeout=30)


def test_track_retried_after_client_time_out_is_charged_once(servers: Servers) -> None:
    server = servers.start()
    external_id = "retry-user"
    granted = _grant_balance(server, external_id)
    minted = mint_token(server, external_id)
    body = {
        "access_source_id": granted["access_source_id"],
        "entitlement_id": ENTITLEMENT,
        "client_id": minted["client_id"],
        "value": 1,
    }
    key = {"Idempotency-Key": "retry-after-timeout"}
    expected = {
        "success": True,
        "requested": 1,
        "consumed": 1,
        "remaining": BALANCE - 1,
        "entitlement_id": ENTITLEMENT,
        "access_source_id": granted["access_source_id"],
        "error": None,
    }
    with server.client(minted["token"]) as http:
        http.get("/v1/health")
        with _server_held_up(server.database_url, minted["client_id"]) as release:
            started = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                http.post("/v1/customer/track", json=body, headers=key, timeout=0.3)
            assert time.monotonic() - started < 2
            # Retry at once, while the first attempt still waits in the server; the
            # lock goes away a moment later and both attempts reach the database.
            threading.Timer(0.7, release.set).start()
            retry = http.post("/v1/customer/track", json=body, headers=key, timeout=15)
        assert retry.status_code == 200, retry.text
        assert retry.json() == expected

        # Once more, after everything settled: a replay, same answer, nothing charged.
        again = http.post("/v1/customer/track", json=body, headers=key)
        assert again.status_code == 200
        assert again.json() == expected
        assert again.headers.get("Idempotent-Replayed") == "true"
    _assert_wal_still_there(server)

    assert _balance(server, external_id) == BALANCE - 1
    with server.api() as api:
        events = api.get("/v1/usage_events", params={"customer": external_id}).json()
        ledger = api.get("/v1/ledger", params={"customer": external_id}).json()["entries"]
    assert [
        (e["idempotency_key"], e["success"], e["consumed"], e["remaining"])
        for e in events["usage_events"]
    ] == [("retry-after-timeout", True, 1, BALANCE - 1)]
    assert [e["amount"] for e in ledger if e["kind"] == "consumed"] == [-1]
    _sdk_retries_a_timed_out_track_once(server)
    run_verify(server.database_url)


def _assert_wal_still_there(server: Server) -> None:
    """SQLite: while a server has the database open, its WAL must stay. Another process
    (this test's lock above, a `revenipe` CLI command) closing its own connection must
    not unlink it; if it does, the server no longer shares locks (or its writes) with
    any other process."""
    if not server.database_url.startswith("sqlite"):
        return
    database = Path(server.database_url.removeprefix("sqlite:///"))
    assert database.with_name(database.name + "-wal").exists(), (
        "the SQLite WAL was unlinked under the running server when another process closed "
        f"its connection: {sorted(p.name for p in database.parent.iterdir())}"
    )


def _sdk_retries_a_timed_out_track_once(server: Server) -> None:
    """The SDK's own retries: its read time-out (0.4 s) expires while the server is held
    up; it resends the track with the same idempotency key until an answer comes back.
    One consumption in all, and the answer is the first attempt's."""
    external_id = "retry-user-sdk"
    _grant_balance(server, external_id)
    token = mint_token(server, external_id)
    config = RevenipeConfig(
        app_id=server.app_id,
        base_url=server.base_url,
        customer_token_supplier=lambda _: token["token"],
        timeout=httpx.Timeout(10.0, read=0.4),
        max_retries=8,
        retry_backoff=0.1,
    )
    with RevenipeSync(config) as client:
        client.login(external_id)
        with _server_held_up(server.database_url, token["client_id"]) as release:
            threading.Timer(1.2, release.set).start()
            started = time.monotonic()
            result = client.track(id=ENTITLEMENT, value=1)
            waited = time.monotonic() - started
    assert waited > 1.0, "the track should have waited for the lock (through retries)"
    assert (result.success, result.consumed, result.remaining) == (True, 1, BALANCE - 1)
    assert _balance(server, external_id) == BALANCE - 1
    with server.api() as api:
        events = api.get("/v1/usage_events", params={"customer": external_id}).json()
    assert [(e["success"], e["consumed"]) for e in events["usage_events"]] == [(True, 1)]
    assert events["usage_events"][0]["idempotency_key"], "the SDK sends an idempotency key"
