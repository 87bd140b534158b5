"""PostgreSQL: statements sent together through libpq's pipeline, below psycopg's cursors
(docs/adr/0024).

A track's two round trips (its lock and reads, then its writes and `COMMIT`) are sent
here rather than through cursors in psycopg's pipeline mode, which cost about 25 us of
Python a statement and 50 us a round trip on this machine, most of a PostgreSQL
track's own CPU; here about 5 and 25. The values still go through psycopg's own
adapters (the connection's `Transformer`: the same dumpers and loaders as a cursor, so
the rows read are the same Python values), and the errors are psycopg's own exceptions.

Each statement is prepared once per connection, as psycopg prepares what it runs often
(PostgreSQL then parses it once); its parameters are sent as text with no declared type,
PostgreSQL taking each one's type from where the statement uses it. The prepared names
(`revenipe_N`) are kept in the connection's `info` (SQLAlchemy's, for the life of the
driver connection) and marked only once PostgreSQL answered the `PREPARE`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from psycopg import Connection as PgConnection
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.abc import Buffer, PQGen
from psycopg.adapt import PyFormat, Transformer
from psycopg.waiting import Ready, Wait

PREPARED = "revenipe.prepared"
"""Key of the driver connection's `info`: query text (bytes) -> its prepared name."""

MAX_PREPARED = 256
"""Statements prepared per connection at most (the statements assembled at run time, such
as IN lists of any length, must not fill the server's memory); the rest run unprepared."""

PREPARE_LIMIT = "revenipe.prepare_limit"
"""Key of the driver connection's `info`: how many statements it may prepare (set when it
connects, `postgres_engine`: `MAX_PREPARED`, or 0 with the URL's `prepare=off`; absent:
`MAX_PREPARED`)."""

_PARAM = re.compile(r"%\((\w+)\)s|%%")
_NAMES = itertools.count()


@functools.lru_cache(maxsize=1024)
def compiled(text: str) -> tuple[bytes, tuple[str, ...]]:
    """`text` with its `%(name)s` parameters as `$1`, `$2`... (a name used twice is one
    parameter) and `%%` as `%`, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, text).encode(), tuple(names)


def run(
    raw: PgConnection[Any],
    info: dict[Any, Any],
    statements: Sequence[tuple[str, Mapping[str, Any] | None]],
) -> list[list[tuple[Any, ...]]]:
    """Send `statements` (text in `%(name)s` style, and its parameters; None: a statement
    without any, such as `BEGIN`) in one round trip and run them one after another; the
    rows each returned. An error is raised once every answer was read: the first
    statement's that failed (the later ones were skipped, and the transaction is
    aborted). `info`: the connection's, where the prepared names are kept. Opens the
    transaction first when psycopg would have (not in autocommit mode, none open)."""
    return _run(raw, info, statements)[0]


def run_one(
    raw: PgConnection[Any], info: dict[Any, Any], text: str, params: Mapping[str, Any]
) -> tuple[list[tuple[Any, ...]], int]:
    """One statement (`run`): its rows, and how many rows it returned or changed."""
    rows, counts = _run(raw, info, [(text, params)])
    return rows[0], counts[0]


def _run(
    raw: PgConnection[Any],
    info: dict[Any, Any],
    statements: Sequence[tuple[str, Mapping[str, Any] | None]],
) -> tuple[list[list[tuple[Any, ...]]], list[int]]:
    pgconn = raw.pgconn
    begun = not raw.autocommit and pgconn.transaction_status == pq.TransactionStatus.IDLE
    if begun:
        statements = [("BEGIN", None), *statements]
    commands = _Commands(raw, info.setdefault(PREPARED, {}), info.get(PREPARE_LIMIT, MAX_PREPARED))
    for index, (text, params) in enumerate(statements):
        commands.add(index, text, params)
    with raw.lock:
        pgconn.enter_pipeline_mode()
        try:
            results = raw.wait(_exchange(pgconn, commands.sends))
        except BaseException:
            # The connection is broken or was interrupted mid-way: the pool finds out.
            with contextlib.suppress(Exception):
                pgconn.exit_pipeline_mode()
            raise
        pgconn.exit_pipeline_mode()
    rows, counts = commands.read(results, len(statements))
    return (rows[1:], counts[1:]) if begun else (rows, counts)


class _Commands:
    """The libpq commands that run a pipeline's statements, and how to read their
    results."""

    def __init__(self, raw: PgConnection[Any], prepared: dict[bytes, bytes], limit: int) -> None:
        self.raw = raw
        self.prepared = prepared
        self.limit = limit
        self.preparing: dict[bytes, bytes] = {}
        self.tx = Transformer.from_context(raw)
        self.sends: list[Callable[[], None]] = []
        self.answers: list[tuple[int, bytes | None]] = []
        """Per command: the index of its statement, and the query it prepares, if so."""

    def _send(
        self, index: int, prepares: bytes | None, send: Callable[..., Any], *args: Any
    ) -> None:
        self.sends.append(functools.partial(send, *args))
        self.answers.append((index, prepares))

    def add(self, index: int, text: str, params: Mapping[str, Any] | None) -> None:
        pgconn = self.raw.pgconn
        query, names = compiled(text)
        if params is None:
            self._send(index, None, pgconn.send_query_params, query, None)
            return
        values: Sequence[Buffer | None] = ()
        if names:
            values = self.tx.dump_sequence([params[n] for n in names], [PyFormat.TEXT] * len(names))
        name = self.prepared.get(query) or self.preparing.get(query)
        if name is None and len(self.prepared) + len(self.preparing) >= self.limit:
            # A connection that prepared its limit runs the rest unprepared.
            self._send(index, None, pgconn.send_query_params, query, values)
            return
        if name is None:
            name = self.preparing[query] = f"revenipe_{next(_NAMES)}".encode()
            self._send(index, query, pgconn.send_prepare, name, query)
        self._send(index, None, pgconn.send_query_prepared, name, values)

    def read(
        self, results: Sequence[pq.abc.PGresult], statements: int
    ) -> tuple[list[list[tuple[Any, ...]]], list[int]]:
        """Each statement's rows and row count; raises the first error."""
        rows: list[list[tuple[Any, ...]]] = [[] for _ in range(statements)]
        counts = [0] * statements
        error: pg_errors.Error | None = None
        for (index, prepares), result in zip(self.answers, results, strict=True):
            status = result.status
            if status == pq.ExecStatus.TUPLES_OK:
                self.tx.set_pgresult(result)
                rows[index] = self.tx.load_rows(0, result.ntuples, tuple)
                counts[index] = result.ntuples
            elif status != pq.ExecStatus.COMMAND_OK:
                if error is None and status != pq.ExecStatus.PIPELINE_ABORTED:
                    error = pg_errors.error_from_result(result, encoding=_encoding(self.raw))
            elif prepares is not None:
                self.prepared[prepares] = self.preparing[prepares]
            else:
                counts[index] = int(result.command_tuples or 0)
        if error is not None:
            raise error
        return rows, counts


def _encoding(raw: PgConnection[Any]) -> str:
    from psycopg._encodings import conn_encoding

    return conn_encoding(raw)


def _exchange(
    pgconn: pq.abc.PGconn, sends: Sequence[Callable[[], None]]
) -> PQGen[list[pq.abc.PGresult]]:
    """Queue every command and a sync, send them, and read one result a command until
    the sync's (waiting on the socket through psycopg's `wait`)."""
    for send in sends:
        send()
    pgconn.pipeline_sync()
    results: list[pq.abc.PGresult] = []
    current: list[pq.abc.PGresult] = []
    while True:
        ready = yield (Wait.RW if pgconn.flush() else Wait.R)
        if not ready & Ready.R:
            continue
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                if not current:
                    break
                results.append(current[-1])
                current = []
            elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            else:
                current.append(result)
