"""Database faults under load: connections cut, PostgreSQL down and crashed, SQLite locked.

PostgreSQL: a private cluster (never the shared one), reached through a proxy that cuts
every connection on demand. While eight threads track (retrying with the same
idempotency key until they get an answer), the proxy cuts all connections several
times, then refuses every connection for two seconds, then the cluster itself crashes
(`pg_ctl stop -m immediate`) and starts again. During each fault the server answers
503 `database_unavailable` (with Retry-After), never `success: true` for a debit that
was rolled back and never a bare 500; within seconds of the database coming back it
answers successes again by itself; afterwards every acknowledged track is in the ledger
exactly once and `revenipe verify` passes.

SQLite: a second process takes the write lock (BEGIN IMMEDIATE) and holds it past the
busy time-out (10 s), then dies with SIGKILL still holding it. Tracks meanwhile get 503
`database_busy` with a message that says so and changed nothing; reads go on; after the
lock is gone the same tracks succeed, the file passes `PRAGMA integrity_check` and the
ledger matches.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import revenipe
from e2e.harness import Server, Servers, run_verify
from reliability.conftest import size
from reliability.faults import CuttingProxy, PrivatePostgres, wait_for
from reliability.workload import (
    NO_FLOOD_LIMITS,
    Load,
    Outcome,
    Tracker,
    assert_ledger_matches,
    open_accounts,
)
from revenipe import ErrorCode, RevenipeError

from support import DEMO_CATALOG, assert_verified

CUTS = size("CUTS", 3)
RECOVERY_LIMIT_S = 10.0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _recovery_s(load: Load, after: int = 5) -> float:
    """Seconds until `after` more tracks were acknowledged (the database is back)."""
    base = load.acknowledged_count()
    return wait_for(
        lambda: load.acknowledged_count() >= base + after,
        RECOVERY_LIMIT_S,
        "the server answered successes again after the database came back",
    )


def _errors_answered(load: Load) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for outcome in load.outcomes:
        kinds.update(outcome.unanswered)
    return kinds


@pytest.mark.slow
def test_postgres_cut_down_and_crashed_mid_load(
    private_postgres: PrivatePostgres, catalog_file: Path, figures: object
) -> None:
    proxy = CuttingProxy(private_postgres.port)
    url = PrivatePostgres.url_via(proxy.port)
    servers = Servers(url, catalog_file)
    servers.env.update(NO_FLOOD_LIMITS)
    servers.start_timeout_s = 120  # two workers starting on a busy machine
    recoveries: dict[str, list[float]] = {"cut": [], "outage": [], "crash": []}
    try:
        server = servers.start(workers=2)
        accounts = open_accounts(server, 4, 10**9, "fault")
        load = Load(server, accounts, threads=8, deadline_s=60).start()
        try:
            _recovery_s(load, after=20)  # warmed up: every worker has pooled connections
            for _ in range(CUTS):
                cut = proxy.cut()
                assert cut > 0, "the server held no database connection to cut"
                recoveries["cut"].append(_recovery_s(load))
            with proxy.outage():
                time.sleep(2.0)
            recoveries["outage"].append(_recovery_s(load))
            private_postgres.crash()
            time.sleep(1.0)
            private_postgres.start()
            recoveries["crash"].append(_recovery_s(load))
            time.sleep(0.5)
        finally:
            load.stop()
        result = assert_ledger_matches(url, load)
        errors = _errors_answered(load)
        unexpected = {k: n for k, n in errors.items() if k != "503 database_unavailable"}
        assert not unexpected, (
            f"answers during faults other than 503 database_unavailable: {errors}"
        )
        assert errors, "no fault was ever seen by a client: the test proved nothing"
        log = "".join(server.output)
        assert "unhandled error" not in log and "Traceback" not in log, server.describe()
    finally:
        servers.stop_all()
        proxy.close()
    run_verify(private_postgres.url)
    assert callable(figures)
    figures(
        cuts=CUTS,
        tracks=result.tracks,
        acknowledged_found_once=result.acknowledged,
        tracks_retried=result.retried,
        error_answers=dict(errors),
        recovery_s={k: [round(v, 2) for v in vs] for k, vs in recoveries.items()},
    )


HOLD_S = 11.0  # longer than the 10 s busy time-out
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE customers SET anonymous = anonymous")
print("holding", flush=True)
time.sleep(3600)
"""


def _track_once(server: Server, outcome: Outcome) -> httpx.Response:
    tracker = Tracker(server, timeout_s=30)
    try:
        return tracker.send(outcome)
    finally:
        tracker.close()


@pytest.mark.slow
@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_sqlite_write_lock_held_by_another_process(
    servers: Servers, e2e_database: str, figures: object
) -> None:
    server = servers.start()
    accounts = open_accounts(server, 2, 1000, "locked")
    path = e2e_database.removeprefix("sqlite:///")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        outcomes = [
            Outcome(f"locked-{i}", accounts[i % 2], "credits", 1, ("protocol", "api")[i % 2])
            for i in range(4)
        ]
        answers: list[httpx.Response | None] = [None] * len(outcomes)

        def send(index: int) -> None:
            answers[index] = _track_once(server, outcomes[index])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(outcomes))]
        for thread in threads:
            thread.start()
        # Readers are not blocked by a writer (WAL): the customer's state still loads.
        with server.api() as api:
            state = api.get(f"/v1/customers/{accounts[0].external_id}")
        assert state.status_code == 200, state.text
        for thread in threads:
            thread.join(timeout=60)
        waited_s = time.monotonic() - started
        assert waited_s < HOLD_S, "the tracks waited for the lock to go instead of timing out"
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock, mid-transaction
        holder.wait(timeout=10)
    for response in answers:
        assert response is not None
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after"), response.headers
        body = response.json()
        assert body["code"] == "database_busy", body
        assert "locked" in body["message"] and "nothing was changed" in body["message"], body
    # Nothing was changed: the same keys now apply, once.
    for outcome in outcomes:
        response = _track_once(server, outcome)
        assert response.status_code == 200, response.text
        outcome.status, outcome.body, outcome.attempts = 200, response.json(), 2
        assert outcome.acknowledged, outcome.body
    load = Load(server, accounts, outcomes=outcomes)
    result = assert_ledger_matches(e2e_database, load)
    servers.stop_all()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    run_verify(e2e_database)
    assert callable(figures)
    figures(held_s=HOLD_S, timed_out_after_s=round(waited_s, 2), tracks=result.tracks)


def test_a_cut_connection_is_database_unavailable_and_the_next_call_recovers(
    postgres_url: str,
) -> None:
    """The storage layer alone: with every connection cut (through a proxy of our own to
    the test server: only our connections), a track fails with `database_unavailable`,
    rolled back, never another error; a retry with the same key succeeds at once (the
    first failure discards the pool's other connections: SQLAlchemy invalidates them)."""
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    port = int(host_port.rsplit(":", 1)[1]) if ":" in host_port else 5432
    proxy = CuttingProxy(port)
    proxied = postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}", 1)
    failures = 0
    try:
        with revenipe.open(proxied) as backend:
            created = backend.create_app("cut", revenipe.load_catalog(DEMO_CATALOG))
            app = backend.app(created.app.id)
            app.grant_entitlement("bob", "purchased_credits", 10)
            assert app.track("bob", "credits", 1).success
            for _ in range(3):
                assert proxy.cut() > 0
                key = f"cut-{uuid.uuid4().hex}"
                try:
                    app.track("bob", "credits", 1, idempotency_key=key)
                except RevenipeError as exc:
                    assert exc.code is ErrorCode.DATABASE_UNAVAILABLE, exc
                    assert "retry" in exc.message
                    failures += 1
                    assert app.track("bob", "credits", 1, idempotency_key=key).success
            assert failures >= 1, "no cut was ever noticed: the test proved nothing"
            with proxy.outage():
                for _ in range(3):
                    with pytest.raises(RevenipeError) as raised:
                        app.track("bob", "credits", 1)
                    assert raised.value.code is ErrorCode.DATABASE_UNAVAILABLE, raised.value
            # 1 + 3 tracks applied before, this one: the failures charged nothing.
            assert app.track("bob", "credits", 1).remaining == 100 + 10 - 5
            assert_verified(backend, created.app.id)
    finally:
        proxy.close()
