"""The client protocol's JSON shapes (reference/client-protocol.md), shared by every edge.

Integers stay integers, timestamps are ISO-8601 UTC with a `Z`, required fields are never
null. The CLI's `--json` output and the server's answers are built here, nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from revenipe.catalog import Catalog, Product
from revenipe.services.customers import CustomerState, SourceState
from revenipe.services.purchases.vocabulary import (
    AttachOutcome,
    CancelOutcome,
    CheckoutSession,
    PaymentSheet,
    PlanChangeOutcome,
    StartedPurchase,
)
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


def _renews_at(s: SourceState) -> str | None:
    if s.source.cancel_at_period_end or s.source.expires_at is not None:
        return None
    return timestamp(s.period_end)


def _pending_change(s: SourceState) -> dict[str, Any] | None:
    change = s.pending_change
    if change is None:
        return None
    return {
        "change_id": change.change_id,
        "type": change.type.value,
        "billing_mode": change.billing_mode.value,
        "status": change.status.value,
        "from_product_id": change.from_product_id,
        "to_product_id": change.to_product_id,
        "effective_at": timestamp(change.effective_at),
    }


def _subscription(s: SourceState) -> dict[str, Any]:
    assert s.product is not None
    return {
        "access_source_id": s.source.id,
        "product_id": s.product.id,
        "product_name": s.product.name,
        "status": s.source.status,
        "provider": s.source.provider,
        "is_trial": s.source.status == "trialing",
        "renews_at": _renews_at(s),
        "expires_at": _expires_at(s),
        "will_cancel_at_period_end": bool(s.source.cancel_at_period_end),
        "can_cancel": s.can_cancel,
        "pending_change": _pending_change(s),
        "payment_method_attached": bool(s.source.payment_method_attached),
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
        "renews_at": _renews_at(s),
        "can_cancel": s.can_cancel,
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


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """Optional members of a purchase answer are left out, not null (at most one is set)."""
    return {k: v for k, v in values.items() if v is not None}


def _checkout(session: CheckoutSession | None) -> dict[str, Any] | None:
    if session is None:
        return None
    return {"session_id": session.session_id, "checkout_url": session.checkout_url}


def _payment_sheet(sheet: PaymentSheet | None) -> dict[str, Any] | None:
    if sheet is None:
        return None
    return _present(
        {
            "customer_id": sheet.customer_id,
            "customer_ephemeral_key_secret": sheet.customer_ephemeral_key_secret,
            "payment_intent_client_secret": sheet.payment_intent_client_secret,
            "subscription_id": sheet.subscription_id,
            "setup_intent_client_secret": sheet.setup_intent_client_secret,
        }
    )


def started_purchase_to_wire(started: StartedPurchase) -> dict[str, Any]:
    setup = started.setup
    direct = started.subscription
    return _present(
        {
            "purchase_method": started.purchase_method,
            "product_id": started.product_id,
            "product_type": started.product_type,
            "checkout": _checkout(started.checkout),
            "payment_sheet": _payment_sheet(started.payment_sheet),
            "setup": None
            if setup is None
            else {
                "customer_id": setup.customer_id,
                "ephemeral_key": setup.ephemeral_key,
                "setup_intent_id": setup.setup_intent_id,
                "setup_intent_client_secret": setup.setup_intent_client_secret,
            },
            "subscription": None
            if direct is None
            else _present(
                {
                    "subscription_id": direct.subscription_id,
                    "status": direct.status,
                    "trial_end": timestamp(direct.trial_end),
                }
            ),
        }
    )


def cancel_to_wire(outcome: CancelOutcome) -> dict[str, Any]:
    return {
        "success": outcome.success,
        "status": outcome.status,
        "will_cancel_at_period_end": outcome.will_cancel_at_period_end,
        "cancels_at": timestamp(outcome.cancels_at),
        "message": outcome.message,
    }


def plan_change_to_wire(outcome: PlanChangeOutcome) -> dict[str, Any]:
    return {
        "success": outcome.success,
        "change_type": outcome.change_type,
        "billing_mode": outcome.billing_mode,
        "status": outcome.status,
        "effective_at": timestamp(outcome.effective_at),
        "message": outcome.message,
    }


def attach_to_wire(outcome: AttachOutcome) -> dict[str, Any]:
    return _present(
        {
            "mode": outcome.mode,
            "checkout": _checkout(outcome.checkout),
            "payment_sheet": _payment_sheet(outcome.payment_sheet),
        }
    )
