"""Signed-in dashboard sessions: table `operator_sessions`, keyed by the SHA-256 of the
cookie's token (the token itself is never stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_one, time_in
from revenipe.storage.schema import operator_sessions


@dataclass(frozen=True, slots=True)
class OperatorSessionRow:
    token_hash: str
    operator_id: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


_COLUMNS = Columns(
    operator_sessions, ("token_hash", "operator_id", "csrf_token", "created_at", "expires_at")
)
_INSERT = _COLUMNS.insert()
_GET = Sql(f"SELECT {_COLUMNS.select} FROM operator_sessions WHERE token_hash = %(token_hash)s")
_DELETE = Sql("DELETE FROM operator_sessions WHERE token_hash = %(token_hash)s")
_DELETE_ENDED = Sql(
    "DELETE FROM operator_sessions WHERE operator_id = %(operator_id)s AND expires_at <= %(now)s"
)


def insert_session(conn: Connection, row: OperatorSessionRow) -> None:
    execute(conn, _INSERT, _COLUMNS.params(conn, row))


def get_session(conn: Connection, token_hash: str) -> OperatorSessionRow | None:
    row = fetch_one(conn, _GET, {"token_hash": token_hash})
    return OperatorSessionRow(**_COLUMNS.read(row)) if row is not None else None


def delete_session(conn: Connection, token_hash: str) -> bool:
    return execute(conn, _DELETE, {"token_hash": token_hash}) > 0


def delete_ended_sessions(conn: Connection, operator_id: str, now: datetime) -> None:
    """An operator's expired sessions (run at each sign-in: the table stays small)."""
    execute(conn, _DELETE_ENDED, {"operator_id": operator_id, "now": time_in(conn, now)})
