"""PostgreSQL breaks a deadlock by failing one transaction: a group-commit batch that
PostgreSQL chose runs again, each job behind a savepoint, and a job failed by a deadlock
there runs once more alone (`Database._run_each_behind_a_savepoint`, docs/adr/0015).

Another session plays the other process, holding the customers' rows in the other
order at the right moments; the batch's session detects each deadlock first (its
`deadlock_timeout` is PostgreSQL's default second, the other session's a minute), so
the batch is the one failed, both times. Every track is answered once, and charged
once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import revenipe
from revenipe.services.usage.batch import BatchItem, BatchOutcome

from support import DEMO_CATALOG, assert_verified


@pytest.fixture
def backend(empty_postgres_url: str) -> Iterator[revenipe.Backend]:
    with revenipe.open(empty_postgres_url) as opened:
        yield opened


def _waiting_on_a_lock(other: psycopg.Connection[Any], timeout: float = 20.0) -> None:
    """Until a session of this database other than `other` waits for a row lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(other.info.dsn, autocommit=True) as probe:
            waiting = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> %s AND wait_event_type = 'Lock'",
                (other.info.backend_pid,),
            ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.01)
    raise AssertionError("the batch never waited for the other session's lock")


def _deadlocks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_batch_failed_by_deadlocks_is_answered_and_charged_once(
    backend: revenipe.Backend, empty_postgres_url: str
) -> None:
    app = backend.app(backend.create_app("deadlocks", revenipe.load_catalog(DEMO_CATALOG)).app.id)
    app.login("alice")  # created first: the batch locks alice's row, then bob's
    app.login("bob")
    deadlocks_before = _deadlocks(empty_postgres_url)
    url = empty_postgres_url.replace("postgresql+psycopg://", "postgresql://")
    other = psycopg.connect(url, prepare_threshold=None)
    ids = dict(other.execute("SELECT external_id, id FROM customers").fetchall())
    lock = "SELECT 1 FROM customers WHERE id = %s FOR UPDATE"
    other.execute("SET LOCAL deadlock_timeout = '60s'")
    other.execute(lock, (ids["bob"],))

    outcomes: list[BatchOutcome] = []
    batch = threading.Thread(
        target=lambda: outcomes.extend(
            app.track_batch(
                [
                    BatchItem("alice", "credits", 10, "alice-1"),
                    BatchItem("bob", "credits", 20, "bob-1"),
                ]
            )
        )
    )
    batch.start()
    try:
        # 1. The batch's read-ahead locks alice, waits for bob; then this session waits
        # for alice: PostgreSQL fails the batch, which runs again behind savepoints.
        _waiting_on_a_lock(other)
        other.execute("SAVEPOINT alice")
        other.execute(lock, (ids["alice"],))  # granted once the batch was failed
        other.execute("ROLLBACK TO SAVEPOINT alice")  # alice's row is free again
        # 2. Behind its savepoint, alice's job locks alice; bob's job waits for bob, and
        # this session waits for alice again: PostgreSQL fails bob's job alone.
        time.sleep(0.2)  # a wait for alice, if the batch began one, is over by now
        _waiting_on_a_lock(other)
        other.execute(lock, (ids["alice"],))  # granted once alice's job committed
    finally:
        other.rollback()
        other.close()
        batch.join(30)
    assert not batch.is_alive()

    # 3. Bob's job ran again, alone. Each track answered once, charged once.
    assert [(o.error, o.result.success, o.result.consumed) for o in outcomes] == [  # type: ignore[union-attr]
        (None, True, 10),
        (None, True, 20),
    ]
    for customer, left in (("alice", 90), ("bob", 80)):
        (credits,) = [k for k in app.state(customer).usage_keys if k.key_id == "credits"]
        assert credits.remaining == left
    with psycopg.connect(url) as conn:
        events = conn.execute(
            "SELECT c.external_id, u.consumed, u.idempotency_key FROM usage_events u "
            "JOIN customers c ON c.id = u.customer_id ORDER BY c.external_id"
        ).fetchall()
        charged = conn.execute(
            "SELECT c.external_id, sum(e.amount) FROM ledger_entries e "
            "JOIN customers c ON c.id = e.customer_id WHERE e.kind = 'consumed' "
            "GROUP BY c.external_id ORDER BY c.external_id"
        ).fetchall()
    assert events == [("alice", 10, "alice-1"), ("bob", 20, "bob-1")]
    assert charged == [("alice", -10), ("bob", -20)]
    assert_verified(backend, app.app_id)
    # Both deadlocks happened, and were the batch's to lose.
    deadline = time.monotonic() + 30  # an idle session flushes its statistics within 10 s
    while _deadlocks(empty_postgres_url) < deadlocks_before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _deadlocks(empty_postgres_url) == deadlocks_before + 2
