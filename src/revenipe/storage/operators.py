"""Operators of the dashboard (server-wide accounts): table `operators`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_all, fetch_one, fetch_scalar
from revenipe.storage.schema import operators


@dataclass(frozen=True, slots=True)
class OperatorRow:
    id: str
    email: str
    password_hash: str
    time_zone: str
    created_at: datetime


_COLUMNS = Columns(operators, ("id", "email", "password_hash", "time_zone", "created_at"))
_INSERT_IF_NEW = _COLUMNS.insert("ON CONFLICT DO NOTHING RETURNING id")
_BY_EMAIL = Sql(f"SELECT {_COLUMNS.select} FROM operators WHERE email = %(email)s")
_BY_ID = Sql(f"SELECT {_COLUMNS.select} FROM operators WHERE id = %(id)s")
_LIST = Sql(f"SELECT {_COLUMNS.select} FROM operators ORDER BY id")
_ANY = Sql("SELECT id FROM operators LIMIT 1")
_SET_PASSWORD = Sql("UPDATE operators SET password_hash = %(hash)s WHERE id = %(id)s")
_SET_TIME_ZONE = Sql("UPDATE operators SET time_zone = %(time_zone)s WHERE id = %(id)s")


def insert_operator_if_new(conn: Connection, row: OperatorRow) -> bool:
    """Insert unless the email is taken; True when this call created it."""
    return fetch_one(conn, _INSERT_IF_NEW, _COLUMNS.params(conn, row)) is not None


def find_by_email(conn: Connection, email: str) -> OperatorRow | None:
    row = fetch_one(conn, _BY_EMAIL, {"email": email})
    return OperatorRow(**_COLUMNS.read(row)) if row is not None else None


def get_operator(conn: Connection, operator_id: str) -> OperatorRow | None:
    row = fetch_one(conn, _BY_ID, {"id": operator_id})
    return OperatorRow(**_COLUMNS.read(row)) if row is not None else None


def list_operators(conn: Connection) -> list[OperatorRow]:
    """Every operator, oldest first (a server has a handful: no paging)."""
    return [OperatorRow(**_COLUMNS.read(r)) for r in fetch_all(conn, _LIST, {})]


def any_operator(conn: Connection) -> bool:
    return fetch_scalar(conn, _ANY, {}) is not None


def update_password_hash(conn: Connection, operator_id: str, password_hash: str) -> None:
    execute(conn, _SET_PASSWORD, {"id": operator_id, "hash": password_hash})


def update_time_zone(conn: Connection, operator_id: str, time_zone: str) -> None:
    execute(conn, _SET_TIME_ZONE, {"id": operator_id, "time_zone": time_zone})
