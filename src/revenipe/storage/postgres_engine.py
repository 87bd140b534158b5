"""How revenipe connects to PostgreSQL: the engine and its pool, what every new
connection is set to, and the one URL option of revenipe's own, `prepare`.

By default revenipe prepares each statement on the server once per connection
(`pg_pipeline`, docs/adr/0024): a prepared statement lives on the server connection
that prepared it. A pooler in transaction mode between revenipe and PostgreSQL
(PgBouncer before 1.21, or 1.21 and later without `max_prepared_statements`) hands each
transaction whichever server connection is free, where revenipe's prepared statements
are unknown: tracks then fail with `prepared statement "revenipe_N" does not exist`.
`?prepare=off` in the URL (`postgresql://user@pooler:6432/db?prepare=off`) sends every
statement unprepared instead: PostgreSQL parses and plans it at every run (a track's
lock took 0.26 ms to plan and 0.05 ms to run in one EXPLAIN ANALYZE here; not measured
in the bench), and nothing is kept on the server connection between transactions.
`prepare=on` is the default.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage.pg_pipeline import MAX_PREPARED, PREPARE_LIMIT
from revenipe.storage.plan_refresh import refresh_plans_now_and_then

PREPARE_OPTION = "prepare"
"""The URL's query option (`on` or `off`), taken out before the URL reaches the driver."""

POOL_SIZE = 10
POOL_OVERFLOW = 20


def create_postgres_engine(url: URL) -> Engine:
    """The engine of a PostgreSQL URL, `prepare` read and taken out of it."""
    prepare = prepares(url)
    # No pre-ping: it costs a round trip per transaction. A connection the server
    # dropped fails its transaction (answered as an error) and is replaced.
    engine = create_engine(
        url.difference_update_query([PREPARE_OPTION]),
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_recycle=3600,
    )
    limit = MAX_PREPARED if prepare else 0

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # revenipe prepares its own statements (`pg_pipeline`), or none; psycopg must
        # prepare none either way: with some of its own prepared, it answers every
        # ROLLBACK it sees (a savepoint's included) with DEALLOCATE ALL, which drops
        # ours too, and behind a pooler its own would fail as ours would.
        dbapi_connection.prepare_threshold = None
        record.info[PREPARE_LIMIT] = limit

    if prepare:
        # Unprepared statements are planned at every run: no plan to refresh.
        refresh_plans_now_and_then(engine)
    return engine


def prepares(url: URL) -> bool:
    """Whether revenipe prepares statements on this URL's connections (`prepare`; a
    value other than on or off is refused)."""
    value = url.query.get(PREPARE_OPTION, "on")
    value = value.lower() if isinstance(value, str) else value  # a tuple: given twice
    if value not in ("on", "off"):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"the database URL's {PREPARE_OPTION} option must be on or off",
        )
    return value == "on"
