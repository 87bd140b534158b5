"""Database faults as the errors callers expect: a database busy too long (SQLite), a
database that cannot be reached or dropped the connection (PostgreSQL), a deadlock
PostgreSQL broke by failing one statement.

Most statements run on the driver's cursor, below SQLAlchemy (`driver_sql`), so
SQLAlchemy never sees the error of a dropped connection and does not do what it does
when it sees one: throw away every pooled connection made before. `expected_errors`
calls `on_lost` for that instead (`Database._connection_lost`): after a PostgreSQL
restart, the transaction that meets a dead connection fails, and the ones after it get
new connections.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator

from sqlalchemy.exc import DBAPIError

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage.sqlite_lock import is_locked

SQLITE_BUSY_TIMEOUT_MS = 10_000


@contextlib.contextmanager
def expected_errors(on_lost: Callable[[], None] | None = None) -> Iterator[None]:
    """Database faults raised in the block as `RevenipeError`s: `DATABASE_BUSY` for a
    lock held too long (SQLite), `DATABASE_UNAVAILABLE` for a database that cannot be
    reached or that dropped the connection (PostgreSQL; `on_lost` is called first).
    Any other error goes through as it is."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, (DBAPIError, sqlite3.OperationalError, *postgres_errors("Error"))):
            raise
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        if is_locked(cause):
            raise busy_error() from exc
        if (isinstance(exc, DBAPIError) and exc.connection_invalidated) or lost_connection(cause):
            if on_lost is not None and connection_dropped(cause):
                on_lost()
            raise RevenipeError(
                ErrorCode.DATABASE_UNAVAILABLE,
                "the database could not be reached or dropped the connection; the operation "
                "was rolled back or, if the connection dropped while committing, may have "
                "been applied: retry it (with the same idempotency key)",
            ) from exc
        raise


def busy_error() -> RevenipeError:
    return RevenipeError(
        ErrorCode.DATABASE_BUSY,
        f"the database stayed locked by another writer for more than "
        f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s; nothing was changed, retry later",
    )


def is_deadlock(error: BaseException) -> bool:
    """PostgreSQL broke a deadlock by failing this statement (sqlstate 40P01)."""
    cause: BaseException | None = error.orig if isinstance(error, DBAPIError) else error
    while cause is not None:
        if getattr(cause, "sqlstate", None) == "40P01":
            return True
        cause = cause.__cause__
    return False


SESSION_TIME_OUTS = ("25P03", "25P04")
"""PostgreSQL ended this one session: a transaction stayed idle, or open, longer than
`idle_in_transaction_session_timeout` or `transaction_timeout` allow. psycopg raises them
as `InternalError`s, and the connection is gone with them."""


def lost_connection(error: object) -> bool:
    """A PostgreSQL error that says the connection, not the statement, failed: no
    connection at all, a connection closed or broken, or the server shutting down
    (`connection_dropped`); the server ending the session on a time-out
    (`SESSION_TIME_OUTS`, this connection only: the pool drops it when it comes back
    broken); or psycopg's `InterfaceError`, which it also raises for a cursor or
    connection used in a state it cannot be (docs/adr/0009)."""
    if isinstance(error, postgres_errors("InterfaceError")) or connection_dropped(error):
        return True
    return (
        isinstance(error, postgres_errors("InternalError"))
        and getattr(error, "sqlstate", None) in SESSION_TIME_OUTS
    )


def connection_dropped(error: object) -> bool:
    """The server is gone or dropped the connection (psycopg's `OperationalError` with
    no SQLSTATE, or one of class 08, connection exception, or 57P, shut down): what
    makes `expected_errors` call `on_lost`. Not `InterfaceError`, which a programming
    error raises too: it must not cost every pooled connection."""
    if not isinstance(error, postgres_errors("OperationalError")):
        return False
    state = getattr(error, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def postgres_errors(name: str) -> tuple[type[BaseException], ...]:
    """psycopg's error class `name`, or none while psycopg is not loaded: a process on
    SQLite never loads it (0.1 s of every CLI command's start), and an error cannot
    come from a driver that was never imported."""
    psycopg = sys.modules.get("psycopg")
    return (getattr(psycopg, name),) if psycopg is not None else ()
