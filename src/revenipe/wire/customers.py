"""Customers: the client protocol's Customer and Refresh objects (entitlements, usage
keys, subscriptions, add-ons, base plans), the server API's customer list, grants and
customer tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from revenipe.engine.errors import InvariantViolation
from revenipe.wire.common import Doc, Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.customers import CustomerState, GrantedSource, SourceState
    from revenipe.services.tokens import MintedToken
    from revenipe.storage import customers as customer_store


class CustomerEntitlement(TypedDict):
    entitlement_id: str
    access_source_id: str
    type: str
    remaining: int
    expires_at: Timestamp | None


class UsageKeyOut(TypedDict):
    key_id: str
    name: str
    remaining: int


class PendingChange(TypedDict):
    change_id: str
    type: str
    billing_mode: str
    status: str
    from_product_id: str
    to_product_id: str
    effective_at: Timestamp | None


class CustomerSubscription(TypedDict):
    access_source_id: str
    product_id: str
    product_name: str
    status: str
    provider: str
    is_trial: bool
    renews_at: Timestamp | None
    expires_at: Timestamp | None
    will_cancel_at_period_end: bool
    can_cancel: bool
    pending_change: PendingChange | None
    payment_method_attached: bool


class CustomerAddOn(TypedDict):
    access_source_id: str
    product_id: str
    product_name: str
    status: str
    billing_type: str
    expires_at: Timestamp | None
    renews_at: Timestamp | None
    can_cancel: bool


class CustomerBasePlan(TypedDict):
    source_id: str
    status: str
    product_id: str
    product_name: str
    interval: str
    period_end: Timestamp | None


class Refresh(TypedDict):
    entitlements: list[CustomerEntitlement]
    usage_keys: list[UsageKeyOut]
    subscriptions: list[CustomerSubscription]
    add_ons: list[CustomerAddOn]
    base_plans: list[CustomerBasePlan]


class Customer(Refresh):
    client_id: Annotated[str, Doc("Revenipe's internal customer id")]


class ApiCustomer(Customer):
    external_id: str


class CustomerListItem(TypedDict):
    client_id: str
    external_id: str
    created_at: Timestamp


class CustomerList(TypedDict):
    customers: list[CustomerListItem]
    next_cursor: str | None


class GrantOut(TypedDict):
    client_id: str
    access_source_id: str
    grant_ids: list[str]


class TokenOut(TypedDict):
    token: str
    client_id: str
    expires_at: Timestamp


def entitlements_to_wire(state: CustomerState) -> Refresh:
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


def customer_to_wire(state: CustomerState) -> Customer:
    """The Customer object: `client_id` (our internal id) plus the five lists."""
    return {"client_id": state.customer.id, **entitlements_to_wire(state)}


def api_customer_to_wire(state: CustomerState, external_id: str) -> ApiCustomer:
    """The server API's customer: the Customer object and the app's external id."""
    return {**customer_to_wire(state), "external_id": external_id}


def customer_list_to_wire(rows: Sequence[customer_store.CustomerRow], limit: int) -> CustomerList:
    """A page of customers; `next_cursor` is set when the page is full."""
    return {
        "customers": [
            {"client_id": c.id, "external_id": c.external_id, "created_at": timestamp(c.created_at)}
            for c in rows
        ],
        "next_cursor": rows[-1].id if len(rows) == limit else None,
    }


def grant_to_wire(granted: GrantedSource) -> GrantOut:
    return {
        "client_id": granted.customer_id,
        "access_source_id": granted.access_source_id,
        "grant_ids": list(granted.grant_ids),
    }


def token_to_wire(minted: MintedToken) -> TokenOut:
    return {
        "token": minted.token,
        "client_id": minted.customer_id,
        "expires_at": timestamp(minted.expires_at),
    }


def _expires_at(s: SourceState) -> str | None:
    if s.source.cancel_at_period_end and s.period_end is not None:
        return timestamp(s.period_end)
    return timestamp(s.source.expires_at)


def _renews_at(s: SourceState) -> str | None:
    if s.source.cancel_at_period_end or s.source.expires_at is not None:
        return None
    return timestamp(s.period_end)


def _pending_change(s: SourceState) -> PendingChange | None:
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


def _subscription(s: SourceState) -> CustomerSubscription:
    if s.product is None:
        raise InvariantViolation(f"subscription {s.source.id} is of no catalog product")
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


def _add_on(s: SourceState) -> CustomerAddOn:
    if s.product is None:
        raise InvariantViolation(f"add-on {s.source.id} is of no catalog product")
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


def _base_plan(s: SourceState) -> CustomerBasePlan:
    if s.product is None or s.product.recurring_interval is None:
        raise InvariantViolation(f"base plan {s.source.id} is of no recurring product")
    return {
        "source_id": s.source.id,
        "status": s.source.status,
        "product_id": s.product.id,
        "product_name": s.product.name,
        "interval": s.product.recurring_interval.value,
        "period_end": timestamp(s.period_end),
    }
