"""Purchases begun and not necessarily finished: table `purchase_attempts`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_one, time_in
from revenipe.storage.schema import purchase_attempts


@dataclass(frozen=True, slots=True)
class PurchaseAttemptRow:
    """A purchase begun and not necessarily finished: a checkout session, a payment or
    setup intent (the sandbox's own, or a record of the provider's)."""

    id: str
    app_id: str
    customer_id: str
    provider: str
    product_id: str | None
    kind: str
    """payment (a one-time product), subscription, or setup (a payment method)."""
    method: str
    status: str
    client_secret_hash: str | None
    source_id: str | None
    success_url: str | None
    cancel_url: str | None
    trial: bool
    details: str | None
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None


_COLUMNS = Columns(
    purchase_attempts,
    (
        "id",
        "app_id",
        "customer_id",
        "provider",
        "product_id",
        "kind",
        "method",
        "status",
        "client_secret_hash",
        "source_id",
        "success_url",
        "cancel_url",
        "trial",
        "details",
        "created_at",
        "expires_at",
        "completed_at",
    ),
)
_INSERT = _COLUMNS.insert()
_GET = Sql(f"SELECT {_COLUMNS.select} FROM purchase_attempts WHERE id = %(id)s")
_GET_OF_APP = Sql(
    f"SELECT {_COLUMNS.select} FROM purchase_attempts WHERE id = %(id)s AND app_id = %(app_id)s"
)
_CLOSE = Sql(
    "UPDATE purchase_attempts SET status = %(status)s, completed_at = %(now)s, "
    "source_id = %(source_id)s WHERE id = %(id)s AND status = 'open'"
)


def insert_purchase_attempt(conn: Connection, attempt: PurchaseAttemptRow) -> None:
    execute(conn, _INSERT, _COLUMNS.params(conn, attempt))


def get_purchase_attempt(
    conn: Connection, attempt_id: str, *, app_id: str | None = None
) -> PurchaseAttemptRow | None:
    """A purchase attempt by id (and of `app_id`, when given)."""
    if app_id is None:
        row = fetch_one(conn, _GET, {"id": attempt_id})
    else:
        row = fetch_one(conn, _GET_OF_APP, {"id": attempt_id, "app_id": app_id})
    return PurchaseAttemptRow(**_COLUMNS.read(row)) if row is not None else None


def update_purchase_attempt_closed(
    conn: Connection, attempt_id: str, status: str, now: datetime, source_id: str | None
) -> bool:
    """Close an open attempt; False if it was not open any more (someone else did)."""
    params = {"id": attempt_id, "status": status, "now": time_in(conn, now)}
    params["source_id"] = source_id
    return execute(conn, _CLOSE, params) > 0
