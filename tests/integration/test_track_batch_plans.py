"""A PostgreSQL batch reads its customers' grants by index whatever PostgreSQL knows of
the tables (storage/tracks.py `_ACTIVE_OF_REQUESTED`). On a server without autovacuum
the tables are never analyzed, and the statement's former shape (`customer_id IN
(...)`) was planned there as a hash join over a scan of every grant of the database:
a batch's cost grew with the customers of every app."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

import revenipe
from revenipe.storage import pg_pipeline
from revenipe.storage import tracks as track_store

from support import DEMO_CATALOG

_CUSTOMERS = 400


def _generic_plan(url: str, text: str, params: dict[str, Any]) -> list[str]:
    """EXPLAIN ANALYZE of the statement's generic plan, the one a batch keeps."""
    query, names = pg_pipeline.compiled(text)
    with psycopg.connect(url) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(b"PREPARE batch_grants AS " + query)
        explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE batch_grants({})").format(
            sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
        )
        rows = conn.execute(explain).fetchall()
    return [str(row[0]) for row in rows]


def test_a_batch_reads_grants_by_index_on_tables_never_analyzed(
    empty_postgres_url: str,
) -> None:
    with revenipe.open(empty_postgres_url) as backend:
        with psycopg.connect(empty_postgres_url, autocommit=True) as conn:
            for table in ("grants", "customers"):  # as on a server without autovacuum
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        created = backend.create_app("plans", revenipe.load_catalog(DEMO_CATALOG))
        app = backend.app(created.app.id)
        for n in range(_CUSTOMERS):
            app.grant_entitlement(f"customer-{n}", "monthly_credits", 10)
    requested = [f"customer-{n}" for n in range(0, _CUSTOMERS, 80)]
    plan = _generic_plan(
        empty_postgres_url,
        track_store._ACTIVE_OF_REQUESTED.postgresql,
        {
            "app_ids": [created.app.id] * len(requested),
            "customer_ids": [None] * len(requested),
            "external_ids": requested,
            "entitlement_ids": ["monthly_credits"],
        },
    )
    assert not [step for step in plan if "Seq Scan on grants" in step], "\n".join(plan)
    assert any("Index Scan using ix_grants_customer_entitlement" in step for step in plan)
