"""Access sources (subscriptions, one-time purchases, promotional grants): table
`access_sources`."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    placeholders,
    time_in,
)
from revenipe.storage.schema import access_sources


@dataclass(frozen=True, slots=True)
class SourceRow:
    id: str
    app_id: str
    customer_id: str
    product_id: str | None
    kind: str
    provider: str
    status: str
    started_at: datetime
    current_period_start: datetime | None
    current_period_end: datetime | None
    expires_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    created_at: datetime
    provider_ref: str | None = None
    """The provider's id for it (Stripe subscription or payment, store transaction)."""
    trial_end: datetime | None = None
    ended_at: datetime | None = None
    billing_anchor: datetime | None = None
    billing_interval: str | None = None
    payment_method_attached: bool = False
    pending_change: str | None = None
    """JSON of the engine's `PendingChange`, or None."""
    due_at: datetime | None = None
    provider_state_at: datetime | None = None
    """When the provider's state last applied was current (orders provider events)."""
    updated_at: datetime | None = None


_COLUMNS = Columns(
    access_sources,
    (
        "id",
        "app_id",
        "customer_id",
        "product_id",
        "kind",
        "provider",
        "status",
        "started_at",
        "current_period_start",
        "current_period_end",
        "expires_at",
        "cancel_at_period_end",
        "canceled_at",
        "created_at",
        "provider_ref",
        "trial_end",
        "ended_at",
        "billing_anchor",
        "billing_interval",
        "payment_method_attached",
        "pending_change",
        "due_at",
        "provider_state_at",
        "updated_at",
    ),
)
_SELECT = f"SELECT {_COLUMNS.select} FROM access_sources"
_INSERT = _COLUMNS.insert()
_UPDATE = Sql(
    "UPDATE access_sources SET "
    + ", ".join(f"{n} = %({n})s" for n in _COLUMNS.names if n != "id")
    + " WHERE id = %(id)s"
)
_GET = Sql(f"{_SELECT} WHERE id = %(id)s AND customer_id = %(customer_id)s")
_FIND_BY_REF = Sql(
    f"{_SELECT} WHERE app_id = %(app_id)s AND provider = %(provider)s "
    "AND provider_ref = %(provider_ref)s"
)
_HAS_ID = Sql("SELECT id FROM access_sources WHERE id = %(id)s")
_LIST = Sql(f"{_SELECT} WHERE customer_id = %(customer_id)s ORDER BY created_at, id")
_LIST_DUE = Sql(
    f"{_SELECT} WHERE customer_id = %(customer_id)s AND due_at <= %(now)s ORDER BY due_at, id"
)


def _source(row: Sequence[object]) -> SourceRow:
    return SourceRow(**_COLUMNS.read(row))


def insert_source(conn: Connection, source: SourceRow) -> None:
    execute(conn, _INSERT, _COLUMNS.params(conn, source))


def update_source(conn: Connection, source: SourceRow) -> None:
    """Write every field of `source` (an access source's state changes as a whole)."""
    execute(conn, _UPDATE, _COLUMNS.params(conn, source))


def get_source(conn: Connection, customer_id: str, source_id: str) -> SourceRow | None:
    """An access source by id, if it is the customer's."""
    row = fetch_one(conn, _GET, {"id": source_id, "customer_id": customer_id})
    return _source(row) if row is not None else None


def find_source_by_ref(
    conn: Connection, app_id: str, provider: str, provider_ref: str
) -> SourceRow | None:
    """An access source by the provider's id for it."""
    params = {"app_id": app_id, "provider": provider, "provider_ref": provider_ref}
    row = fetch_one(conn, _FIND_BY_REF, params)
    return _source(row) if row is not None else None


def has_source_id(conn: Connection, source_id: str) -> bool:
    """Whether any access source, of any app, has this id (a reserved id is used once)."""
    return fetch_one(conn, _HAS_ID, {"id": source_id}) is not None


def list_sources(conn: Connection, customer_id: str) -> list[SourceRow]:
    """The customer's access sources, oldest first."""
    return [_source(r) for r in fetch_all(conn, _LIST, {"customer_id": customer_id})]


def list_sources_due(conn: Connection, customer_id: str, now: datetime) -> list[SourceRow]:
    """The customer's access sources whose `due_at` has come, soonest first."""
    params = {"customer_id": customer_id, "now": time_in(conn, now)}
    return [_source(r) for r in fetch_all(conn, _LIST_DUE, params)]


def list_subscribed_product_ids(
    conn: Connection, app_id: str, live_statuses: Sequence[str]
) -> list[str]:
    """Product ids that live subscriptions hold or will move to (a pending change),
    sorted."""
    listed, params = placeholders("s", live_statuses)
    text = (
        "SELECT DISTINCT product_id, pending_change FROM access_sources "
        f"WHERE app_id = %(app_id)s AND kind = 'subscription' AND status IN ({listed})"
    )
    params["app_id"] = app_id
    held: set[str] = set()
    for product_id, pending_change in fetch_all(conn, cached_sql(text), params):
        if product_id:
            held.add(product_id)
        if pending_change:
            held.add(json.loads(pending_change)["to_product_id"])
    return sorted(held)
