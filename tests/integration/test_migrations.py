"""Migrations run by themselves and build exactly the schema the code declares."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from revenipe.storage.database import _MIGRATIONS_DIR, open_database
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
        assert version == ScriptDirectory(str(_MIGRATIONS_DIR)).get_current_head() == "0004"
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
