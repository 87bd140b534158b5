"""Hand-written SQL for the hot path (track), run on the driver's cursor.

SQLAlchemy Core builds, caches and compiles a statement on every `execute`; on a track
that is most of the cost (see docs/adr/0007). The few statements a track runs are written
here once, in PostgreSQL's `%(name)s` style, turned into SQLite's `:name` style at import,
and executed on the DBAPI cursor of the connection that holds the transaction.

Values cross this boundary exactly as SQLAlchemy stores them, so both paths read and
write the same rows: times as timezone-aware values on PostgreSQL and as
`YYYY-MM-DD HH:MM:SS.ffffff` UTC text on SQLite, booleans as 0/1 on SQLite.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

_NAMED = re.compile(r"%\((\w+)\)s")


class Sql:
    """One statement in both dialects; `row_lock` is PostgreSQL's locking clause (SQLite
    needs none: its writers hold the database lock from BEGIN IMMEDIATE)."""

    __slots__ = ("postgresql", "sqlite")

    def __init__(self, text: str, *, row_lock: str = "") -> None:
        text = " ".join(text.split())
        self.postgresql = f"{text} {row_lock}".strip()
        self.sqlite = _NAMED.sub(r":\1", text)

    def text(self, conn: Connection) -> str:
        return self.sqlite if conn.dialect.name == "sqlite" else self.postgresql


def _cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def fetch_all(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    cursor = _cursor(conn)
    try:
        cursor.execute(sql.text(conn), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def execute(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> None:
    cursor = _cursor(conn)
    try:
        cursor.execute(sql.text(conn), params)
    finally:
        cursor.close()


def execute_many(conn: Connection, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    cursor = _cursor(conn)
    try:
        if len(rows) == 1:
            cursor.execute(sql.text(conn), rows[0])
        else:
            cursor.executemany(sql.text(conn), rows)
    finally:
        cursor.close()


@contextlib.contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, send the statements run inside this block without waiting for each
    one's answer (psycopg's pipeline mode): one round trip for all of them instead of one
    each. Errors surface when the block ends. On SQLite statements run in-process anyway."""
    if conn.dialect.name == "sqlite":
        yield
        return
    with conn.connection.dbapi_connection.pipeline():  # type: ignore[union-attr]
        yield


def time_in(conn: Connection, moment: datetime | None) -> Any:
    """A time as the column stores it."""
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    if conn.dialect.name == "sqlite":
        return utc.strftime("%Y-%m-%d %H:%M:%S.%f")
    return utc


def time_out(value: Any) -> datetime | None:
    """A time read from a column, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def placeholders(prefix: str, values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """`%(p0)s, %(p1)s, ...` and its parameters, for an IN list."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f"%({name})s" for name in params), params
