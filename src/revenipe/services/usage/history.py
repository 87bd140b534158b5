"""Reading the past: usage history and ledger export (paginated, app-scoped)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef
from revenipe.storage import customers as customer_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import usage_events as usage_store


def _customer_id(
    ctx: ServiceContext, conn: Any, app_id: str, customer: CustomerRef | None
) -> str | None:
    if customer is None:
        return None
    row = customer_store.find_customer(
        conn, app_id, customer_id=customer.customer_id, external_id=customer.external_id
    )
    if row is None:
        raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
    return row.id


def usage_history(
    ctx: ServiceContext,
    app_id: str,
    *,
    customer: CustomerRef | None = None,
    tracked_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: str | None = None,
    limit: int = 100,
) -> list[usage_store.UsageEventRow]:
    """Usage events, newest first; page with `before_id` = the last id of a page."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        customer_id = _customer_id(ctx, conn, app_id, customer)
        return usage_store.list_usage_events(
            conn,
            app_id,
            customer_id=customer_id,
            tracked_id=tracked_id,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )


def ledger_export(
    ctx: ServiceContext,
    app_id: str,
    *,
    customer: CustomerRef | None = None,
    after_id: int = 0,
    limit: int = 1000,
) -> list[ledger_store.LedgerEntryRow]:
    """Ledger entries, oldest first; page with `after_id`."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        customer_id = _customer_id(ctx, conn, app_id, customer)
        return ledger_store.list_ledger_entries(
            conn, app_id, customer_id=customer_id, after_id=after_id, limit=limit
        )
