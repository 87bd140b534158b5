"""Migrations run by themselves and build exactly the schema the code declares."""

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from revenipe.storage.database import (
    _MIGRATIONS_DIR,
    LATEST_REVISION,
    _migration_lock,
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


def test_the_migration_lock_is_held_outside_any_transaction(empty_postgres_url: str) -> None:
    """The lock is held on a connection of its own for as long as the migration runs:
    idle in a transaction, it was ended by a server whose
    `idle_in_transaction_session_timeout` is shorter than the migration (the first open
    of a new database failed), and a lock can be held without one."""
    open_database(empty_postgres_url).close()  # migrated: what follows only takes the lock
    options = quote("-c idle_in_transaction_session_timeout=300")
    db = open_database(f"{empty_postgres_url}?options={options}")
    try:
        with _migration_lock(db):
            with db.engine.connect() as conn:
                holders = conn.exec_driver_sql(
                    "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted"
                ).all()
            time.sleep(0.6)  # longer than the server lets a transaction idle
        assert holders == [("idle",)]
    finally:
        db.close()
