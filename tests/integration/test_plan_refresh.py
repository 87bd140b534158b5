"""A plan PostgreSQL made while the tables were nearly empty must not outlive them
(storage/plan_refresh, docs/adr/0023), in revenipe and in the bench's floor, which runs
a track's statements as revenipe runs them.

What is watched is the server's own count of sequential scans of `usage_events`: the
frozen plan of a track's lock reads every usage event to find the one under the
idempotency key; a plan made on the grown table looks it up by index."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import text

import revenipe
from revenipe.bench import track_sql, workload
from revenipe.services.context import CustomerIds
from revenipe.storage import plan_refresh

from support import DEMO_CATALOG

_GROWN_TO = 20_000


def _grow_usage_events(url: str, external_id: str) -> None:
    """Add `_GROWN_TO` usage events of the customer, behind every cached plan's back."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO usage_events (id, app_id, customer_id, tracked_id, requested, "
            "consumed, reversed, remaining, success, idempotency_key, created_at) "
            "SELECT 'use_grown_' || n, c.app_id, c.id, 'grown', 1, 1, 0, 0, true, "
            "'grown' || n, now() FROM customers c, generate_series(1, %s) AS n "
            "WHERE c.external_id = %s",
            (_GROWN_TO, external_id),
        )


def _seq_scans(url: str, flush: Callable[[], None]) -> int:
    """Sequential scans of `usage_events` so far. A server process sends its counts at
    an idle moment of its own choosing, or at the next one once asked to (`flush` asks
    every connection that ran tracks); read from a connection of its own."""
    flush()
    with psycopg.connect(url) as reader:
        row = reader.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'usage_events'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _scans_of(
    url: str, flush: Callable[[], None], track: Callable[[int], object], keys: range
) -> int:
    before = _seq_scans(url, flush)
    for n in keys:
        track(n)
    return _seq_scans(url, flush) - before


def _then_grown_and_refreshed(
    url: str,
    external_id: str,
    flush: Callable[[], None],
    track: Callable[[int], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tracks on the empty tables (plans kept), the table grown: tracks scan it while the
    plans are kept, and stop once the refresh is due."""
    for n in range(40):  # often enough on the empty table for a generic plan
        track(n)
    _grow_usage_events(url, external_id)
    frozen = _scans_of(url, flush, track, range(100, 110))
    assert frozen >= 10, "the precondition: a plan made on the empty table was kept"
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 0.0)
    assert _scans_of(url, flush, track, range(200, 210)) == 0


def test_revenipe_makes_plans_again_once_the_tables_grew(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 3600.0)
    with revenipe.open(empty_postgres_url) as backend:
        app = backend.app(backend.create_app("plans", revenipe.load_catalog(DEMO_CATALOG)).app.id)
        app.grant_entitlement("alice", "monthly_credits", 10**9)
        engine = backend.database.engine
        # Every track looks alice up by external id, as a process's first track of a
        # customer does: that lock's plan, made on the empty tables, is the one that
        # scans (later tracks lock by the id the process remembered).
        app.context.customer_ids = CustomerIds(limit=0)

        def flush() -> None:
            backend.database.hand_back_lane_connections()  # to reach every connection
            with contextlib.ExitStack() as stack:
                pooled = [
                    stack.enter_context(engine.connect()) for _ in range(engine.pool.checkedin())
                ]
                for conn in pooled:
                    conn.execute(text("SELECT pg_stat_force_next_flush()"))
                    conn.commit()

        def track(n: int) -> None:
            assert app.track("alice", "monthly_credits", 1, idempotency_key=f"k{n}").success

        _then_grown_and_refreshed(empty_postgres_url, "alice", flush, track, monkeypatch)


def test_the_bench_floor_makes_plans_again_as_revenipe_does(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 3600.0)
    with revenipe.open(empty_postgres_url) as backend:
        app = backend.app(backend.create_app("bench", workload.catalog()).app.id)
        (customer,) = workload.add_customers(app, ["floor"])
    floor = track_sql.open_caller(empty_postgres_url, app.app_id, workload.TRACKED_ID)
    assert isinstance(floor, track_sql.PostgresTrackStatements)

    def flush() -> None:
        floor.conn.execute("SELECT pg_stat_force_next_flush()")
        floor.conn.commit()

    def track(n: int) -> None:
        floor.ids.clear()  # by external id every time, as revenipe's tracks above
        assert floor.call(customer, workload.TRACK_VALUE, f"k{n}")

    try:
        _then_grown_and_refreshed(empty_postgres_url, customer, flush, track, monkeypatch)
    finally:
        floor.close()


def test_a_connection_the_server_dropped_is_replaced_at_its_refresh(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh is the first thing a checked-out connection sends: a connection whose
    server process is gone fails there, and is replaced, not handed on."""
    with revenipe.open(empty_postgres_url) as backend:
        app = backend.app(backend.create_app("plans", revenipe.load_catalog(DEMO_CATALOG)).app.id)
        app.grant_entitlement("alice", "monthly_credits", 10)
        before = app.track("alice", "monthly_credits", 1, idempotency_key="before")
        with psycopg.connect(empty_postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 0.0)
        after = app.track("alice", "monthly_credits", 1, idempotency_key="after")
        assert after.success
        assert after.remaining == before.remaining - 1
