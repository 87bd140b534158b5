"""Migrations run by themselves and build exactly the schema the code declares."""

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, inspect, text

from revenipe.storage.database import (
    _MIGRATIONS_DIR,
    _PG_MIGRATION_LOCK,
    LATEST_REVISION,
    open_database,
)
from revenipe.storage.schema import metadata


def test_migrated_schema_matches_the_declared_one(database_url: str) -> None:
    db = open_database(database_url)
    try:
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert differences == [], f"schema.py and the migrations differ: {differences}"
    finally:
        db.close()


def test_opening_twice_is_a_no_op_and_keeps_data(database_url: str) -> None:
    first = open_database(database_url)
    with first.write() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS probe_keep (x INTEGER)"))
        conn.execute(text("INSERT INTO probe_keep VALUES (1)"))
    first.close()
    second = open_database(database_url)
    try:
        assert "apps" in inspect(second.engine).get_table_names()
        with second.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM probe_keep")).scalar() >= 1
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert (
            version == ScriptDirectory(str(_MIGRATIONS_DIR)).get_current_head() == LATEST_REVISION
        )
        with second.write() as conn:
            conn.execute(text("DROP TABLE probe_keep"))
    finally:
        second.close()


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    db = open_database(f"sqlite:///{tmp_path}/wal.db")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        db.close()


def test_the_latest_revision_constant_is_alembic_s_head() -> None:
    assert ScriptDirectory(str(_MIGRATIONS_DIR)).get_current_head() == LATEST_REVISION


def test_an_up_to_date_sqlite_database_opens_without_alembic_or_psycopg(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'revenipe.db'}"
    open_database(url).close()  # creates and migrates
    probe = (
        "import sys\n"
        "from revenipe.storage.database import open_database\n"
        f"open_database({url!r}).close()\n"
        "loaded = sorted(m for m in ('alembic', 'psycopg') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_migration_lock_is_taken_by_the_migration_s_own_transaction(
    empty_postgres_url: str,
) -> None:
    """The advisory lock and the migration run on one connection, in one transaction.
    A lock held on a connection of its own waited idle in a transaction through the
    whole migration, and a server whose `idle_in_transaction_session_timeout` was
    shorter ended it (the first open of a new database failed); a session's lock taken
    outside a transaction could stay behind on another server connection of a pooler
    in transaction mode."""
    ran: list[tuple[int, str]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        ran.append((id(conn.connection.dbapi_connection), statement))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        open_database(empty_postgres_url).close()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    locked = [i for i, (_, statement) in enumerate(ran) if "pg_advisory_xact_lock" in statement]
    assert len(locked) == 1, ran
    created = [conn for conn, statement in ran if statement.lstrip().startswith("CREATE TABLE")]
    assert created and set(created) == {ran[locked[0]][0]}


def test_processes_migrating_a_new_database_at_once_each_open_it(
    empty_postgres_url: str,
) -> None:
    """Two processes find a new database and both wait for the migration lock: the
    second one through sees the revision the first committed and migrates nothing, also
    on a server whose default isolation is REPEATABLE READ (its snapshot would otherwise
    date from before it waited)."""
    options = quote("-c default_transaction_isolation=repeatable\\ read")
    url = f"{empty_postgres_url}?options={options}"
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            open_database(url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with psycopg.connect(empty_postgres_url, autocommit=False) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
        threads = [threading.Thread(target=open_and_close) for _ in range(2)]
        for count, thread in enumerate(threads, start=1):
            thread.start()
            _wait_for_lock_waiters(empty_postgres_url, count)
        holder.rollback()  # as if a third process had started and failed
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    db = open_database(empty_postgres_url)
    try:
        with db.engine.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert revision == LATEST_REVISION
    finally:
        db.close()


def _wait_for_lock_waiters(url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as probe:
        while True:
            waiting = probe.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if waiting is not None and waiting[0] >= count:
                return
            assert time.monotonic() < deadline, f"{count} openers never waited for the lock"
            time.sleep(0.02)
