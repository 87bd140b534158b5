"""One-time dashboard sign-in links: table `sign_in_links`, keyed by the SHA-256 of the
link's token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_one, time_in
from revenipe.storage.schema import sign_in_links


@dataclass(frozen=True, slots=True)
class SignInLinkRow:
    token_hash: str
    operator_id: str | None
    """None: a set-up link, which creates the first operator."""
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


_COLUMNS = Columns(
    sign_in_links, ("token_hash", "operator_id", "created_at", "expires_at", "used_at")
)
_INSERT = _COLUMNS.insert()
_GET = Sql(f"SELECT {_COLUMNS.select} FROM sign_in_links WHERE token_hash = %(token_hash)s")
_USE = Sql(
    "UPDATE sign_in_links SET used_at = %(now)s WHERE token_hash = %(token_hash)s "
    "AND used_at IS NULL AND expires_at > %(now)s"
)


def insert_link(conn: Connection, row: SignInLinkRow) -> None:
    execute(conn, _INSERT, _COLUMNS.params(conn, row))


def get_link(conn: Connection, token_hash: str) -> SignInLinkRow | None:
    row = fetch_one(conn, _GET, {"token_hash": token_hash})
    return SignInLinkRow(**_COLUMNS.read(row)) if row is not None else None


def use_link(conn: Connection, token_hash: str, now: datetime) -> bool:
    """Mark an unused, unexpired link used; False if it was not (one use, even when
    two requests race: the row changes once)."""
    return execute(conn, _USE, {"token_hash": token_hash, "now": time_in(conn, now)}) == 1
