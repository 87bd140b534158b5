"""PostgreSQL statements sent through libpq's pipeline below psycopg's cursors
(storage/pg_pipeline, docs/adr/0024): the values read are those a psycopg cursor reads,
errors are psycopg's own, each statement is prepared once per connection, and psycopg
never drops those prepared statements."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from revenipe.engine.errors import InvariantViolation
from revenipe.storage import pg_pipeline
from revenipe.storage.database import Database, open_database
from revenipe.storage.driver_sql import (
    Sql,
    execute,
    execute_many,
    fetch_all,
    fetch_all_together,
    fetch_one,
    pipelined,
)

VALUES: dict[str, Any] = {
    "text": 'it\'s "quoted", -- not a comment; ünïcode\n<script>',
    "big": 2**53,
    "none": None,
    "yes": True,
    "moment": datetime(2026, 12, 6, 18, 37, 40, 123456, tzinfo=UTC),
    "ids": ["a", None, "c,d", "{e}", 'f"g'],
    "numbers": [1, 2, 3],
}
SELECT_VALUES = (
    "SELECT %(text)s::text, %(big)s::bigint, %(none)s::text, %(yes)s::boolean, "
    "%(moment)s::timestamptz, %(ids)s::text[], %(numbers)s::integer[], %(text)s::text"
)


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    database = open_database(postgres_url)
    yield database
    database.close()


@pytest.fixture
def table(postgres_url: str) -> Iterator[str]:
    name = f"pipeline_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id integer PRIMARY KEY)")
        yield name
        conn.execute(f"DROP TABLE {name}")


def _our_prepared(raw: Any) -> list[str]:
    rows = raw.execute(
        "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'revenipe_%'"
    ).fetchall()
    return [row[0] for row in rows]


def test_parameters_are_numbered_once_per_name_and_percent_signs_unescaped() -> None:
    assert pg_pipeline.compiled("SELECT %(a)s, %(b)s, %(a)s WHERE x LIKE 'p%%'") == (
        b"SELECT $1, $2, $1 WHERE x LIKE 'p%'",
        ("a", "b"),
    )


def test_the_values_read_are_those_a_cursor_reads(db: Database) -> None:
    with db.write() as conn:
        ours = fetch_all(conn, Sql(SELECT_VALUES), VALUES)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(SELECT_VALUES, VALUES)
        assert ours == cursor.fetchall()
        assert ours[0][0] == VALUES["text"] and ours[0][5] == VALUES["ids"]
        assert fetch_one(conn, Sql("SELECT 1 WHERE false"), {}) is None


def test_a_statement_is_prepared_once_per_connection(db: Database) -> None:
    sql = Sql("SELECT %(x)s::integer + 1")
    with db.write() as conn:
        for x in range(10):
            assert fetch_all(conn, sql, {"x": x}) == [(x + 1,)]
        together = fetch_all_together(conn, [(sql, {"x": 20}), (sql, {"x": 30})])
        assert together == [[(21,)], [(31,)]]
        raw = conn.connection.dbapi_connection
        assert _our_prepared(raw).count("SELECT $1::integer + 1") == 1


def test_psycopg_never_drops_our_prepared_statements(db: Database) -> None:
    """psycopg prepares what it ran five times and then answers every ROLLBACK with
    DEALLOCATE ALL: with a savepoint rolled back often (a batch whose job failed), the
    next track found its statements gone."""
    sql = Sql("SELECT %(x)s::integer")
    with db.write() as conn:
        raw: Any = conn.connection.dbapi_connection
        assert fetch_all(conn, sql, {"x": 1}) == [(1,)]
        for _ in range(10):
            raw.execute("SAVEPOINT job")
            raw.execute("ROLLBACK TO SAVEPOINT job")
        raw.rollback()
        assert fetch_all(conn, sql, {"x": 2}) == [(2,)]


def test_an_error_is_psycopg_s_own_and_the_connection_goes_on(db: Database, table: str) -> None:
    insert = Sql(f"INSERT INTO {table} (id) VALUES (%(id)s)")
    with pytest.raises(psycopg.errors.UniqueViolation), db.write() as conn, pipelined(conn):
        execute_many(conn, insert, [{"id": 1}, {"id": 1}, {"id": 2}])
    with db.write() as conn:
        assert fetch_all(conn, Sql(f"SELECT id FROM {table}"), {}) == []
        execute_many(conn, insert, [{"id": 1}, {"id": 2}])
        assert execute(conn, Sql(f"DELETE FROM {table} WHERE id > %(id)s"), {"id": 0}) == 2


def test_a_pipelined_block_that_raises_sends_nothing(db: Database, table: str) -> None:
    insert = Sql(f"INSERT INTO {table} (id) VALUES (%(id)s)")
    with db.write() as conn:
        with pytest.raises(RuntimeError), pipelined(conn):
            execute_many(conn, insert, [{"id": 7}])
            raise RuntimeError("the block failed before its end")
        assert fetch_all(conn, Sql(f"SELECT id FROM {table}"), {}) == []
        with pytest.raises(InvariantViolation), pipelined(conn):
            fetch_all(conn, Sql(f"SELECT id FROM {table}"), {})


def test_past_the_bound_statements_run_unprepared(db: Database) -> None:
    """Statements assembled at run time (IN lists of any length) must not pile up on the
    server: past its limit (`MAX_PREPARED`, set when it connects) a connection runs new
    ones unprepared."""
    with db.write() as conn:
        raw = conn.connection.dbapi_connection
        info = conn.connection.info
        assert info[pg_pipeline.PREPARE_LIMIT] == pg_pipeline.MAX_PREPARED
        already = len(_our_prepared(raw))
        info[pg_pipeline.PREPARE_LIMIT] = already + 2
        try:
            for n in range(5):
                sql = Sql(f"SELECT %(x)s::integer + {n}")
                assert fetch_all(conn, sql, {"x": 1}) == [(1 + n,)]
                assert fetch_all(conn, sql, {"x": 2}) == [(2 + n,)]
            assert len(_our_prepared(raw)) == already + 2
        finally:
            info[pg_pipeline.PREPARE_LIMIT] = pg_pipeline.MAX_PREPARED


def test_with_prepare_off_nothing_is_prepared(postgres_url: str) -> None:
    """`?prepare=off` (behind a pooler in transaction mode, storage/postgres_engine):
    the same statements, the same values, nothing left prepared on the server."""
    database = open_database(f"{postgres_url}?prepare=off")
    try:
        with database.write() as conn:
            raw = conn.connection.dbapi_connection
            cursor = raw.cursor()  # type: ignore[union-attr]
            cursor.execute(SELECT_VALUES, VALUES)
            expected = cursor.fetchall()
            for _ in range(3):
                assert fetch_all(conn, Sql(SELECT_VALUES), VALUES) == expected
            assert _our_prepared(conn.connection.dbapi_connection) == []
            assert conn.connection.info[pg_pipeline.PREPARE_LIMIT] == 0
    finally:
        database.close()
