"""The database limit: a minimal raw-SQL equivalent of one track, same database, same
driver, same settings as revenipe's storage (SQLite: WAL, synchronous=NORMAL,
BEGIN IMMEDIATE; PostgreSQL: psycopg 3, READ COMMITTED, one transaction).

One call is one transaction: a conditional debit of one balance row, one ledger row,
one idempotency row under a unique key, commit. Nothing else: no ORM, no checks in
Python. Its own three tables live in the measured database beside revenipe's.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from typing import Any

import psycopg

from revenipe.bench.databases import libpq_connect, sqlite_path
from revenipe.storage.faults import SQLITE_BUSY_TIMEOUT_MS

BALANCE = 1_000_000_000

_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_balance ("
    " id TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
    "CREATE TABLE IF NOT EXISTS bench_ledger ("
    " id INTEGER PRIMARY KEY, balance_id TEXT NOT NULL REFERENCES bench_balance (id),"
    " amount INTEGER NOT NULL, balance_after INTEGER NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_idempotency ("
    " balance_id TEXT NOT NULL REFERENCES bench_balance (id), idempotency_key TEXT NOT NULL,"
    " created_at TEXT NOT NULL, PRIMARY KEY (balance_id, idempotency_key))",
)
_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_balance ("
    " id TEXT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0))",
    "CREATE TABLE IF NOT EXISTS bench_ledger ("
    " id BIGSERIAL PRIMARY KEY, balance_id TEXT NOT NULL REFERENCES bench_balance (id),"
    " amount BIGINT NOT NULL, balance_after BIGINT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_idempotency ("
    " balance_id TEXT NOT NULL REFERENCES bench_balance (id), idempotency_key TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (balance_id, idempotency_key))",
)


def balance_ids(count: int) -> list[str]:
    return [f"bal_{i:06d}" for i in range(count)]


def prepare(url: str, count: int) -> list[str]:
    """Create the tables (once) and `count` balance rows; their ids."""
    ids = balance_ids(count)
    rows = [(i, BALANCE) for i in ids]
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as conn:
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)
            conn.executemany("INSERT OR IGNORE INTO bench_balance VALUES (?, ?)", rows)
            conn.commit()
    else:
        with libpq_connect(url) as pg:
            for statement in _PG_SCHEMA:
                pg.execute(statement)
            with pg.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO bench_balance VALUES (%s, %s) ON CONFLICT DO NOTHING", rows
                )
    return ids


class SqliteTrack:
    """One caller's connection, configured exactly as revenipe's storage configures its."""

    def __init__(self, url: str) -> None:
        self.conn = sqlite3.connect(
            sqlite_path(url),
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        cursor = self.conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        self.cursor = cursor

    def call(self, balance_id: str, value: int, idempotency_key: str) -> bool:
        cursor = self.cursor
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        cursor.execute("BEGIN IMMEDIATE")
        try:
            row = cursor.execute(
                "UPDATE bench_balance SET balance = balance - ? "
                "WHERE id = ? AND balance >= ? RETURNING balance",
                (value, balance_id, value),
            ).fetchone()
            if row is None:
                cursor.execute("ROLLBACK")
                return False
            cursor.execute(
                "INSERT INTO bench_ledger (balance_id, amount, balance_after, created_at) "
                "VALUES (?, ?, ?, ?)",
                (balance_id, -value, row[0], now),
            )
            cursor.execute(
                "INSERT INTO bench_idempotency (balance_id, idempotency_key, created_at) "
                "VALUES (?, ?, ?)",
                (balance_id, idempotency_key, now),
            )
            cursor.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        return True

    def close(self) -> None:
        self.conn.close()


class PostgresTrack:
    """One caller's psycopg 3 connection (statements prepared after a few calls)."""

    def __init__(self, url: str) -> None:
        self.conn: psycopg.Connection[Any] = libpq_connect(url)
        self.cursor = self.conn.cursor()

    def call(self, balance_id: str, value: int, idempotency_key: str) -> bool:
        cursor = self.cursor
        now = datetime.now(UTC)
        try:
            cursor.execute(
                "UPDATE bench_balance SET balance = balance - %s "
                "WHERE id = %s AND balance >= %s RETURNING balance",
                (value, balance_id, value),
            )
            row = cursor.fetchone()
            if row is None:
                self.conn.rollback()
                return False
            cursor.execute(
                "INSERT INTO bench_ledger (balance_id, amount, balance_after, created_at) "
                "VALUES (%s, %s, %s, %s)",
                (balance_id, -value, row[0], now),
            )
            cursor.execute(
                "INSERT INTO bench_idempotency (balance_id, idempotency_key, created_at) "
                "VALUES (%s, %s, %s)",
                (balance_id, idempotency_key, now),
            )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return True

    def close(self) -> None:
        self.conn.close()


def open_caller(url: str) -> SqliteTrack | PostgresTrack:
    return SqliteTrack(url) if url.startswith("sqlite") else PostgresTrack(url)
