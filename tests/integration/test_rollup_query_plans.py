"""The rollup fold and the pages' reads never scan a table that grows (docs/adr/0013,
0021): every statement they run, traced on SQLite, is asked for its plan."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest

import revenipe
from query_plans import growing_scans, traced_statements
from revenipe.services import rollups

from support import DEMO_CATALOG, Clock

GROWING = {
    "customers",
    "access_sources",
    "grants",
    "usage_events",
    "ledger_entries",
    "usage_rollup_hours",
    "usage_rollup_customer_days",
    "usage_rollup_active",
    "usage_rollup_days",
}


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement run on any SQLite connection opened while the test runs."""
    with traced_statements() as seen:
        yield seen


def test_fold_and_page_reads_use_indexes(statements: list[str], tmp_path: Path) -> None:
    database = tmp_path / "plans.db"
    clock = Clock()
    with revenipe.open(f"sqlite:///{database}", clock=clock) as backend:
        app = backend.app(backend.create_app("plans", revenipe.load_catalog(DEMO_CATALOG)).app.id)
        for n in range(30):
            app.track(f"c{n}", "credits", 1 + n % 4)
            app.track(f"c{n}", "nope", 1)
        statements.clear()
        ctx = backend.context
        rollups.fold_all(ctx, batch=7, margin=timedelta(0))
        rollups.count_sources(ctx)
        rollups.overview(ctx, app.app_id, days=30, zone=UTC)
        since = clock.now - timedelta(days=2)
        rollups.list_tracked_ids(ctx, app.app_id, since, clock.now)
        for granularity in ("hour", "day"):
            rollups.usage_analytics(
                ctx,
                app.app_id,
                "credits",
                granularity=granularity,
                since=since,
                until=clock.now + timedelta(hours=1),
                zone=UTC,
            )
    queries = sorted(
        {
            s
            for s in statements
            if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"))
        }
    )
    assert any("usage_rollup_customer_days" in q for q in queries), queries
    assert any("FROM usage_events WHERE id >" in q for q in queries), queries
    problems = [
        f"{scans}\n  {q}" for q in queries if (scans := growing_scans(database, q, GROWING))
    ]
    assert not problems, "\n".join(problems)
