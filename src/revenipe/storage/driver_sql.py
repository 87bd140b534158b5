"""Hand-written SQL, run on the driver's cursor: how every storage module queries.

SQLAlchemy Core builds, caches and compiles a statement on every `execute`; on a track
that is most of the cost (see docs/adr/0007). Statements are written once, in
PostgreSQL's `%(name)s` style, turned into SQLite's `:name` style at import, and executed
on the DBAPI cursor of the connection that holds the transaction.

Values cross this boundary exactly as SQLAlchemy stores them (the schema and the
migrations use SQLAlchemy types), so both read and write the same rows: times as
timezone-aware values on PostgreSQL and as `YYYY-MM-DD HH:MM:SS.ffffff` UTC text on
SQLite, booleans as 0/1 on SQLite. This module is the one place those conversions
happen: `time_in` / `time_out` for single values, `Columns` for whole rows.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Connection, Table

from revenipe.engine.errors import InvariantViolation
from revenipe.storage.schema import UtcDateTime

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


BEFORE_STATEMENT = "revenipe.before_statement"
"""Key of `Connection.info`: a callable run with the connection before each statement
this module runs on it (a batch of tracks sends the writes it kept first, so that every
statement sees them: `storage.tracks`)."""


QUEUED_WRITES = "revenipe.queued_writes"
"""Key of `Connection.info`: the statements of a `pipelined` block on PostgreSQL, sent
when it ends."""


def _before_statement(conn: Connection) -> None:
    before = conn.info.get(BEFORE_STATEMENT)
    if before is not None:
        before(conn)


def _cursor(conn: Connection) -> Any:
    if QUEUED_WRITES in conn.info:
        raise InvariantViolation("only `execute_many` runs inside a `pipelined` block")
    _before_statement(conn)
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _driver(conn: Connection) -> Any:
    raw = conn.connection.dbapi_connection
    if raw is None:
        raise InvariantViolation("a checked-out connection has no DBAPI connection")
    return raw


def _pg_pipeline() -> Any:
    from revenipe.storage import pg_pipeline  # psycopg only where PostgreSQL is used

    return pg_pipeline


def _run_one(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> tuple[list[Any], int]:
    """PostgreSQL: one statement through `pg_pipeline` (prepared once per connection)."""
    if QUEUED_WRITES in conn.info:
        raise InvariantViolation("only `execute_many` runs inside a `pipelined` block")
    _before_statement(conn)
    result: tuple[list[Any], int] = _pg_pipeline().run_one(
        _driver(conn), conn.connection.info, sql.postgresql, params
    )
    return result


def fetch_all(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    if conn.dialect.name != "sqlite":
        return _run_one(conn, sql, params)[0]
    cursor = _cursor(conn)
    try:
        cursor.execute(sql.text(conn), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def fetch_all_together(
    conn: Connection,
    statements: Sequence[tuple[Sql, Mapping[str, Any] | None]],
    *,
    begin: bool = False,
) -> list[list[tuple[Any, ...]]]:
    """The rows of each query, in order. On PostgreSQL they are sent together
    (`pg_pipeline`) and run one after another on the server: one round trip for all. A query
    sees what the ones before it did (a lock taken, under READ COMMITTED a snapshot
    taken after it). `begin`: a `BEGIN` goes first, in the same round trip (a
    connection in autocommit mode opening its transaction itself, `tracks.batched`).
    Parameters None: a statement without any, sent unprepared (PostgreSQL only)."""
    if conn.dialect.name == "sqlite":
        return [fetch_all(conn, sql, params or {}) for sql, params in statements]
    sent: list[tuple[str, Mapping[str, Any] | None]] = [("BEGIN", None)] if begin else []
    for sql, params in statements:
        _before_statement(conn)
        sent.append((sql.postgresql, params))
    rows: list[list[tuple[Any, ...]]] = _pg_pipeline().run(
        _driver(conn), conn.connection.info, sent
    )
    return rows[1:] if begin else rows


def prepares(conn: Connection) -> bool:
    """PostgreSQL: whether this connection prepares the statements it runs, and so keeps
    their plans (not with the URL's `prepare=off`, `postgres_engine`)."""
    pipeline = _pg_pipeline()
    limit: int = conn.connection.info.get(pipeline.PREPARE_LIMIT, pipeline.MAX_PREPARED)
    return limit > 0


def fetch_each(
    conn: Connection, sql: Sql, params: Mapping[str, Any], *, batch: int = 1000
) -> Iterator[tuple[Any, ...]]:
    """Every row of a query, read `batch` rows at a time (whole-table scans: verify)."""
    cursor = _cursor(conn)
    try:
        cursor.execute(sql.text(conn), params)
        while rows := cursor.fetchmany(batch):
            yield from rows
    finally:
        cursor.close()


def fetch_one(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if conn.dialect.name != "sqlite":
        rows = _run_one(conn, sql, params)[0]
        return rows[0] if rows else None
    cursor = _cursor(conn)
    try:
        cursor.execute(sql.text(conn), params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def fetch_scalar(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> Any:
    """The one column of the first row a query returns, or None if it returns none."""
    row = fetch_one(conn, sql, params)
    if row is None:
        return None
    (value,) = row
    return value


def execute(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> int:
    """Run one statement; the number of rows it changed (UPDATE, DELETE)."""
    if conn.dialect.name != "sqlite":
        return _run_one(conn, sql, params)[1]
    cursor = _cursor(conn)
    try:
        cursor.execute(sql.text(conn), params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def execute_many(conn: Connection, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    queued = conn.info.get(QUEUED_WRITES)
    if queued is not None:  # inside `pipelined` on PostgreSQL: sent when it ends
        _before_statement(conn)
        queued.extend((sql.postgresql, row) for row in rows)
        return
    if conn.dialect.name != "sqlite":
        _before_statement(conn)
        _pg_pipeline().run(_driver(conn), conn.connection.info, [(sql.postgresql, r) for r in rows])
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
def pipelined(conn: Connection, *, commit: bool = False) -> Iterator[None]:
    """On PostgreSQL, send the statements `execute_many` runs inside this block together
    when it ends (`pg_pipeline`): one round trip for all of them instead of one each, and
    nothing sent if the block raised. Errors surface when the block ends; no other
    statement may run inside it. On SQLite statements run in-process anyway. `commit`: a
    `COMMIT` follows them in the same round trip, skipped if one failed (a transaction
    opened by `fetch_all_together(..., begin=True)`; PostgreSQL only)."""
    if conn.dialect.name == "sqlite":
        yield
        return
    if QUEUED_WRITES in conn.info:
        raise InvariantViolation("`pipelined` blocks do not nest")
    queued: list[tuple[str, Mapping[str, Any] | None]] = []
    conn.info[QUEUED_WRITES] = queued
    try:
        yield
    finally:
        del conn.info[QUEUED_WRITES]
    if commit:
        queued.append(("COMMIT", None))
    if queued:
        _pg_pipeline().run(_driver(conn), conn.connection.info, queued)


@contextlib.contextmanager
def own_transaction(conn: Connection) -> Iterator[bool]:
    """PostgreSQL: within this block the statements begin and commit the transaction
    themselves, `fetch_all_together(..., begin=True)` first and `pipelined(...,
    commit=True)` (or `commit_own`) last, each in the round trip of the statements it
    travels with, instead of psycopg's own `BEGIN` and `COMMIT`, a round trip each. The
    driver connection is in autocommit mode meanwhile (statements inside an explicit
    `BEGIN ... COMMIT` run in that one transaction all the same). Yields False and
    changes nothing on SQLite, or once a statement ran on the connection.

    On the way out the connection leaves autocommit mode; after an error, the
    transaction still open is rolled back first, and a connection that cannot be set
    back (broken) is invalidated, never to return to the pool in autocommit mode. A
    block that ends without error but leaves its transaction open is a bug: rolled back,
    `InvariantViolation`."""
    if conn.dialect.name == "sqlite":
        yield False
        return
    raw: Any = conn.connection.dbapi_connection
    idle = _idle(raw)
    if raw.autocommit or raw.info.transaction_status != idle:
        yield False
        return
    raw.autocommit = True
    try:
        yield True
    except BaseException:
        _leave_autocommit(conn, raw, idle)
        raise
    if raw.info.transaction_status != idle:
        _leave_autocommit(conn, raw, idle)
        raise InvariantViolation("a transaction begun with BEGIN was left open (rolled back)")
    raw.autocommit = False  # idle: no round trip, it cannot fail


def commit_own(conn: Connection) -> None:
    """`COMMIT` the transaction of an `own_transaction` block (one round trip)."""
    conn.connection.dbapi_connection.execute("COMMIT", prepare=False)  # type: ignore[union-attr]


def _idle(raw: Any) -> Any:
    from psycopg.pq import TransactionStatus  # psycopg only where PostgreSQL is used

    return TransactionStatus.IDLE


def _leave_autocommit(conn: Connection, raw: Any, idle: Any) -> None:
    try:
        if raw.info.transaction_status != idle:
            raw.rollback()
        raw.autocommit = False
    except Exception:
        conn.invalidate()


_SQL_CACHE: dict[str, Sql] = {}


def cached_sql(text: str) -> Sql:
    """The `Sql` of a statement assembled at run time (optional filters, IN lists)."""
    cached = _SQL_CACHE.get(text)
    if cached is None:
        cached = _SQL_CACHE[text] = Sql(text)
    return cached


_SQLITE_TIME_LENGTH = len("YYYY-MM-DD HH:MM:SS.ffffff")


def time_in(conn: Connection, moment: datetime | None) -> Any:
    """A time as the column stores it (naive times are refused, as `UtcDateTime` does)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError(f"naive value for a time column: {moment!r}")
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if conn.dialect.name == "sqlite":
        # "YYYY-MM-DD HH:MM:SS.ffffff" (what SQLAlchemy writes), less the "+00:00":
        # twice as fast as strftime, and times are written on every track.
        return utc.isoformat(" ", "microseconds")[:_SQLITE_TIME_LENGTH]
    return utc


def time_out(value: Any) -> datetime | None:
    """A time read from a column, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) == _SQLITE_TIME_LENGTH:
            # SQLite's naive UTC text: parsed with its zone appended, five times faster
            # than parsing and then replacing the zone (times are read on every track).
            return datetime.fromisoformat(value + "+00:00")
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if not isinstance(value, datetime):
        raise InvariantViolation(f"a time column read as {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def placeholders(prefix: str, values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """`%(p0)s, %(p1)s, ...` and its parameters, for an IN list."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f"%({name})s" for name in params), params


class Columns:
    """One table's column list, read and written by name.

    `names` is both the SELECT list (`select`, `select_as(alias)`) and the keys a row is
    read back under (`read`), so no query takes a row apart by position by hand. The
    schema says which columns hold times and booleans; `read` and `params` convert
    those (the only per-column conversions storage does).

    `read` is compiled once per column list (as `dataclasses` and `namedtuple` compile
    theirs): it unpacks the row into one local per column name and builds the dict in
    one expression. Rows are read on the track's hot path, where a generic loop over
    the columns cost a few microseconds a track."""

    __slots__ = ("_times", "names", "read", "select", "table")

    read: Callable[[Sequence[Any]], dict[str, Any]]
    """A row selected with `select` (or `select_as`), keyed by column name, times as
    aware UTC datetimes and booleans as bool. A row of another length raises."""

    def __init__(self, table: Table, names: Sequence[str]) -> None:
        self.table = table.name
        self.names = tuple(names)
        self.select = ", ".join(self.names)
        self._times = tuple(n for n in self.names if isinstance(table.c[n].type, UtcDateTime))
        self.read = _compile_reader(table, self.names)

    def select_as(self, alias: str) -> str:
        """The SELECT list with each column qualified by a table alias (for joins)."""
        return ", ".join(f"{alias}.{n}" for n in self.names)

    def insert(self, then: str = "") -> Sql:
        """INSERT of every column, from parameters named after them (see `params`);
        `then` follows the VALUES list (ON CONFLICT ..., RETURNING ...)."""
        values = ", ".join(f"%({n})s" for n in self.names)
        return Sql(f"INSERT INTO {self.table} ({self.select}) VALUES ({values}) {then}")

    def params(self, conn: Connection, row: object) -> dict[str, Any]:
        """The parameters of `insert` (and of updates by name) from an object with an
        attribute per column."""
        return self.encode(conn, {n: getattr(row, n) for n in self.names})

    def encode(self, conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
        """Parameters keyed by column name, times as the columns store them (in place)."""
        for name in self._times:
            values[name] = time_in(conn, values[name])
        return values


def _required_time(value: Any, column: str) -> datetime:
    moment = time_out(value)
    if moment is None:
        raise InvariantViolation(f"NOT NULL time column {column} read as NULL")
    return moment


def _compile_reader(
    table: Table, names: tuple[str, ...]
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """`def read(row): c_id, c_name, ... = row; return {"id": c_id, ...}`, with each
    time column through `time_out` and each boolean through `bool`."""
    items = []
    for name in names:
        if not name.isidentifier():
            raise InvariantViolation(f"not a column name: {name!r}")
        column = table.c[name]
        local = f"c_{name}"
        if isinstance(column.type, UtcDateTime):
            if column.nullable:
                value = f"time_out({local})"
            else:
                value = f"required_time({local}, {f'{table.name}.{name}'!r})"
        elif isinstance(column.type, Boolean):
            value = f"bool({local})"
        else:
            value = local
        items.append(f"{name!r}: {value}")
    unpack = "".join(f"c_{name}, " for name in names)
    source = f"def read(row):\n    {unpack}= row\n    return {{{', '.join(items)}}}\n"
    scope: dict[str, Any] = {"time_out": time_out, "required_time": _required_time}
    exec(compile(source, f"<columns of {table.name}>", "exec"), scope)
    reader: Callable[[Sequence[Any]], dict[str, Any]] = scope["read"]
    return reader
