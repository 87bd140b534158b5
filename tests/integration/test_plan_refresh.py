"""A plan PostgreSQL made while the tables were nearly empty must not outlive them
(storage/plan_refresh, docs/adr/0023).

What is watched is the server's own count of sequential scans of `usage_events`: the
frozen plan of a track's lock reads every usage event to find the one under the
idempotency key; a plan made on the grown table looks it up by index."""

from __future__ import annotations

import contextlib

import psycopg
import pytest
from sqlalchemy import text

import revenipe
from revenipe.storage import plan_refresh

from support import DEMO_CATALOG

_GROWN_TO = 20_000


def _usage_event_scans(backend: revenipe.Backend, url: str) -> int:
    """Sequential scans of `usage_events` so far, this process's connections included.

    A server process sends its counts at an idle moment of its own choosing, or at the
    next one once asked to: every pooled connection is asked, then the count is read
    from outside the pool."""
    engine = backend.database.engine
    with contextlib.ExitStack() as stack:
        pooled = [stack.enter_context(engine.connect()) for _ in range(engine.pool.checkedin())]
        for conn in pooled:
            conn.execute(text("SELECT pg_stat_force_next_flush()"))
            conn.commit()
    with psycopg.connect(url) as reader:
        row = reader.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'usage_events'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _track(app: revenipe.App, customer: str, keys: range) -> None:
    for n in keys:
        assert app.track(customer, "monthly_credits", 1, idempotency_key=f"k{n}").success


def test_plans_made_on_empty_tables_are_made_again_once_they_grew(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 3600.0)
    with revenipe.open(empty_postgres_url) as backend:
        app = backend.app(backend.create_app("plans", revenipe.load_catalog(DEMO_CATALOG)).app.id)
        app.grant_entitlement("alice", "monthly_credits", 10**9)
        # Run often enough on the empty table for PostgreSQL to keep a generic plan.
        _track(app, "alice", range(40))
        with backend.database.engine.connect() as conn:
            customer_id = conn.execute(
                text("SELECT id, app_id FROM customers WHERE external_id = 'alice'")
            ).one()
            conn.execute(
                text(
                    "INSERT INTO usage_events (id, app_id, customer_id, tracked_id, "
                    "requested, consumed, reversed, remaining, success, idempotency_key, "
                    "created_at) SELECT 'use_grown_' || n, :app_id, :customer_id, "
                    "'monthly_credits', 1, 1, 0, 0, true, 'grown' || n, now() "
                    "FROM generate_series(1, :count) AS n"
                ),
                {"app_id": customer_id[1], "customer_id": customer_id[0], "count": _GROWN_TO},
            )
            conn.commit()

        # Not refreshed yet: the plan made on the empty table scans every usage event.
        before = _usage_event_scans(backend, empty_postgres_url)
        _track(app, "alice", range(100, 110))
        frozen = _usage_event_scans(backend, empty_postgres_url) - before
        assert frozen >= 10, "the precondition: a plan made on the empty table was kept"

        # Due: the next checkout drops the plans, and the lock is planned on the grown table.
        monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 0.0)
        before = _usage_event_scans(backend, empty_postgres_url)
        _track(app, "alice", range(200, 210))
        assert _usage_event_scans(backend, empty_postgres_url) - before == 0
