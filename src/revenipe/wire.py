"""The client protocol's JSON shapes (reference/client-protocol.md), shared by every edge.

Integers stay integers, timestamps are ISO-8601 UTC with a `Z`, required fields are never
null. The CLI's `--json` output and the server's answers are built here, nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from revenipe.catalog import Catalog, Product
from revenipe.services.customers import CustomerState, SourceState
from revenipe.storage.repository import UsageEventRow


def timestamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entitlements_to_wire(state: CustomerState) -> dict[str, Any]:
    """The five lists shared by the Customer and Refresh objects."""
    return {
        "entitlements": [
            {
                "entitlement_id": e.entitlement_id,
                "access_source_id": e.access_source_id,
                "type": e.type,
                "remaining": e.remaining,
                "expires_at": timestamp(e.expires_at),
            }
            for e in state.entitlements
        ],
        "usage_keys": [
            {"key_id": k.key_id, "name": k.name, "remaining": k.remaining} for k in state.usage_keys
        ],
        "subscriptions": [_subscription(s) for s in state.subscriptions()],
        "add_ons": [_add_on(s) for s in state.add_ons()],
        "base_plans": [_base_plan(s) for s in state.subscriptions()],
    }


def customer_to_wire(state: CustomerState) -> dict[str, Any]:
    """The Customer object: `client_id` (our internal id) plus the five lists."""
    return {"client_id": state.customer.id, **entitlements_to_wire(state)}


def _expires_at(s: SourceState) -> str | None:
    if s.source.cancel_at_period_end and s.period_end is not None:
        return timestamp(s.period_end)
    return timestamp(s.source.expires_at)


def _subscription(s: SourceState) -> dict[str, Any]:
    assert s.product is not None
    will_cancel = bool(s.source.cancel_at_period_end)
    return {
        "access_source_id": s.source.id,
        "product_id": s.product.id,
        "product_name": s.product.name,
        "status": s.source.status,
        "provider": s.source.provider,
        "is_trial": s.source.status == "trialing",
        "renews_at": None if will_cancel else timestamp(s.period_end),
        "expires_at": _expires_at(s),
        "will_cancel_at_period_end": will_cancel,
        "can_cancel": False,
        "pending_change": None,
        "payment_method_attached": False,
    }


def _add_on(s: SourceState) -> dict[str, Any]:
    assert s.product is not None
    return {
        "access_source_id": s.source.id,
        "product_id": s.product.id,
        "product_name": s.product.name,
        "status": s.source.status,
        "billing_type": "recurring" if s.product.recurring_interval else "one_time",
        "expires_at": _expires_at(s),
        "renews_at": timestamp(s.period_end),
        "can_cancel": False,
    }


def _base_plan(s: SourceState) -> dict[str, Any]:
    assert s.product is not None and s.product.recurring_interval is not None
    return {
        "source_id": s.source.id,
        "status": s.source.status,
        "product_id": s.product.id,
        "product_name": s.product.name,
        "interval": s.product.recurring_interval.value,
        "period_end": timestamp(s.period_end),
    }


def product_to_wire(product: Product, catalog: Catalog) -> dict[str, Any]:
    return {
        "product_id": product.id,
        "name": product.name,
        # The published client decodes descriptions as non-null strings.
        "description": product.description or "",
        "price": product.price,
        "type": product.type.value,
        "recurring_interval": product.recurring_interval.value
        if product.recurring_interval
        else None,
        "app_store_product_id": product.app_store_product_id,
        "play_store_product_id": product.play_store_product_id,
        "entitlements": [
            {
                "entitlement_id": g.entitlement_id,
                "name": catalog.entitlements_by_id[g.entitlement_id].name,
                "description": catalog.entitlements_by_id[g.entitlement_id].description or "",
            }
            for g in product.grants
        ],
    }


def usage_event_to_wire(event: UsageEventRow) -> dict[str, Any]:
    return {
        "usage_event_id": event.id,
        "client_id": event.customer_id,
        "id": event.tracked_id,
        "access_source_id": event.access_source_id,
        "requested": event.requested,
        "consumed": event.consumed,
        "reversed": event.reversed,
        "remaining": event.remaining,
        "success": event.success,
        "error": event.error,
        "idempotency_key": event.idempotency_key,
        "created_at": timestamp(event.created_at),
    }


def ledger_entry_to_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "client_id": row["customer_id"],
        "grant_id": row["grant_id"],
        "kind": row["kind"],
        "amount": row["amount"],
        "balance_after": row["balance_after"],
        "usage_event_id": row["usage_event_id"],
        "reversal_id": row["reversal_id"],
        "effective_at": timestamp(row["effective_at"]),
        "recorded_at": timestamp(row["recorded_at"]),
    }
