"""Customers and their ids at the providers: tables `customers`, `provider_customers`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    cached_sql,
    execute,
    fetch_all,
    fetch_one,
    fetch_scalar,
    time_in,
)
from revenipe.storage.schema import customers


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: str
    app_id: str
    external_id: str
    anonymous: bool
    created_at: datetime
    due_at: datetime | None = None
    """The next instant one of its access sources changes by itself (sandbox renewals,
    scheduled plan changes) or one of its holds expires: operations catch the customer
    up first when it has passed."""


_COLUMNS = Columns(customers, ("id", "app_id", "external_id", "anonymous", "created_at", "due_at"))
# rowcount is not reliable for INSERT through psycopg 3 (-1): ask for the row back.
_INSERT_IF_NEW = _COLUMNS.insert("ON CONFLICT DO NOTHING RETURNING id")
_FIND = (
    f"SELECT {_COLUMNS.select} FROM customers WHERE app_id = %(app_id)s AND {{column}} = %(key)s"
)
_FIND_STATEMENTS = {
    (column, lock): Sql(_FIND.format(column=column), row_lock="FOR UPDATE" if lock else "")
    for column in ("id", "external_id")
    for lock in (False, True)
}
_UPDATE_DUE = Sql(
    "UPDATE customers SET due_at = (SELECT min(due) FROM ("
    "SELECT due_at AS due FROM access_sources WHERE customer_id = %(id)s UNION ALL "
    "SELECT expires_at FROM reservations WHERE customer_id = %(id)s AND state = 'held'"
    ") AS changes) WHERE id = %(id)s"
)


def insert_customer_if_new(conn: Connection, customer: CustomerRow) -> bool:
    """Insert unless (app, external id) exists; True when this call created it."""
    return fetch_one(conn, _INSERT_IF_NEW, _COLUMNS.params(conn, customer)) is not None


def find_customer(
    conn: Connection,
    app_id: str,
    *,
    customer_id: str | None = None,
    external_id: str | None = None,
    lock: bool = False,
) -> CustomerRow | None:
    """A customer of `app_id` by internal id or, when that is None, by external id;
    `lock` takes its row lock (PostgreSQL; SQLite's writer holds the database)."""
    column = "id" if customer_id is not None else "external_id"
    key = customer_id if customer_id is not None else external_id
    row = fetch_one(conn, _FIND_STATEMENTS[column, lock], {"app_id": app_id, "key": key})
    return CustomerRow(**_COLUMNS.read(row)) if row is not None else None


def list_customers(
    conn: Connection, app_id: str, *, after_id: str | None, limit: int
) -> list[CustomerRow]:
    """A page of the app's customers in id order, after `after_id` when given."""
    text = f"SELECT {_COLUMNS.select} FROM customers WHERE app_id = %(app_id)s"
    if after_id:
        text += " AND id > %(after_id)s"
    text += " ORDER BY id LIMIT %(limit)s"
    params = {"app_id": app_id, "after_id": after_id, "limit": limit}
    return [CustomerRow(**_COLUMNS.read(r)) for r in fetch_all(conn, cached_sql(text), params)]


_BY_EXTERNAL_PREFIX = (
    f"SELECT {_COLUMNS.select} FROM customers WHERE app_id = %(app_id)s "
    "AND external_id {low} AND external_id < %(high)s ORDER BY external_id LIMIT %(limit)s"
)
_EXTERNAL_PREFIX = {
    after: Sql(_BY_EXTERNAL_PREFIX.replace("{low}", "> %(low)s" if after else ">= %(low)s"))
    for after in (False, True)
}


def list_customers_by_external_prefix(
    conn: Connection, app_id: str, prefix: str, *, after: str | None, limit: int
) -> list[CustomerRow]:
    """Customers whose external id starts with `prefix`, in external id order, after
    `after`: a range on the (app, external id) unique index, never a scan. The range
    is read in the column's collation; rows that collate inside it without starting
    with the prefix are dropped here (the page may then hold fewer than `limit`)."""
    low = after if after is not None and after > prefix else prefix
    params = {"app_id": app_id, "low": low, "high": prefix + "\U0010ffff", "limit": limit}
    statement = _EXTERNAL_PREFIX[after is not None and after > prefix]
    rows = [CustomerRow(**_COLUMNS.read(r)) for r in fetch_all(conn, statement, params)]
    return [row for row in rows if row.external_id.startswith(prefix)]


def update_customer_due(conn: Connection, customer_id: str) -> None:
    """Set the customer's `due_at` to the soonest `due_at` of its access sources and
    expiry of its open reservations."""
    execute(conn, _UPDATE_DUE, {"id": customer_id})


# --- provider customers -----------------------------------------------------------

_LINK = Sql(
    "INSERT INTO provider_customers (app_id, provider, customer_id, provider_customer_id, "
    "created_at) VALUES (%(app_id)s, %(provider)s, %(customer_id)s, "
    "%(provider_customer_id)s, %(now)s) ON CONFLICT DO NOTHING"
)
_FIND_PROVIDER_ID = Sql(
    "SELECT provider_customer_id FROM provider_customers WHERE app_id = %(app_id)s "
    "AND provider = %(provider)s AND customer_id = %(customer_id)s"
)
_FIND_BY_PROVIDER_ID = Sql(
    "SELECT customer_id FROM provider_customers WHERE app_id = %(app_id)s "
    "AND provider = %(provider)s AND provider_customer_id = %(provider_customer_id)s"
)


def find_provider_customer_id(
    conn: Connection, app_id: str, provider: str, customer_id: str
) -> str | None:
    """The provider's id for our customer, if they were linked."""
    params = {"app_id": app_id, "provider": provider, "customer_id": customer_id}
    found = fetch_scalar(conn, _FIND_PROVIDER_ID, params)
    return str(found) if found is not None else None


def find_customer_id_by_provider_id(
    conn: Connection, app_id: str, provider: str, provider_customer_id: str
) -> str | None:
    """Our customer's id for the provider's customer id, if they were linked."""
    params = {"app_id": app_id, "provider": provider, "provider_customer_id": provider_customer_id}
    found = fetch_scalar(conn, _FIND_BY_PROVIDER_ID, params)
    return str(found) if found is not None else None


def insert_provider_customer(
    conn: Connection,
    app_id: str,
    provider: str,
    customer_id: str,
    provider_customer_id: str,
    now: datetime,
) -> None:
    """Link our customer to the provider's, unless linked already."""
    params = {
        "app_id": app_id,
        "provider": provider,
        "customer_id": customer_id,
        "provider_customer_id": provider_customer_id,
        "now": time_in(conn, now),
    }
    execute(conn, _LINK, params)
