"""Failed dashboard sign-ins, counted per subject ("email:..." or "address:...") over a
recent window: table `sign_in_failures`. In the database so that the limit holds across
worker processes and servers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Sql, execute, fetch_all, time_in, time_out

_INSERT = Sql("INSERT INTO sign_in_failures (subject, at) VALUES (%(subject)s, %(at)s)")
_SINCE = Sql(
    "SELECT at FROM sign_in_failures WHERE subject = %(subject)s AND at > %(since)s "
    "ORDER BY at LIMIT %(limit)s"
)
_FORGET_BEFORE = Sql(
    "DELETE FROM sign_in_failures WHERE subject = %(subject)s AND at <= %(before)s"
)


def insert_failure(conn: Connection, subject: str, at: datetime) -> None:
    execute(conn, _INSERT, {"subject": subject, "at": time_in(conn, at)})


def failures_since(conn: Connection, subject: str, since: datetime, limit: int) -> list[datetime]:
    """The subject's failures after `since`, oldest first, at most `limit` of them."""
    rows = fetch_all(
        conn, _SINCE, {"subject": subject, "since": time_in(conn, since), "limit": limit}
    )
    return [moment for (value,) in rows if (moment := time_out(value)) is not None]


def forget_failures(conn: Connection, subject: str, before: datetime) -> None:
    """Drop the subject's failures at or before `before` (outside every window now)."""
    execute(conn, _FORGET_BEFORE, {"subject": subject, "before": time_in(conn, before)})
