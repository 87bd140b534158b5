"""The purchase vocabulary every provider shares: what a customer asks for (requests,
orders), what a provider answers (outcomes), the `PurchaseProvider` protocol, and the
checks on what customers send. It imports no provider, so every provider can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product, ProductType
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.return_urls import check_return_url
from revenipe.engine.sources import Provider
from revenipe.engine.subscriptions import (
    LIVE_STATUSES,
    CancelMode,
    PendingChange,
    Plan,
    Subscription,
)
from revenipe.services.context import ServiceContext
from revenipe.storage import apps as app_store
from revenipe.storage import customers as customer_store
from revenipe.storage import sources as source_store

PURCHASE_METHODS = ("hosted_checkout", "payment_sheet")
TRIAL_BEHAVIORS = ("direct", "setup_intent")
MAX_EXTRA_PARAMS = 20


# --- what a customer asks for ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurchaseRequest:
    product_id: str
    purchase_method: str
    trial_payment_method_behavior: str | None = None
    success_url: str | None = None
    cancel_url: str | None = None
    extra_params: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """A validated purchase request, with what a provider needs to fulfil it."""

    app: app_store.AppRow
    customer: customer_store.CustomerRow
    catalog: Catalog
    product: Product
    request: PurchaseRequest
    now: datetime
    public_base_url: str
    """Where this server is reached (the sandbox's checkout pages live there)."""

    @property
    def recurring(self) -> bool:
        return self.product.recurring_interval is not None

    @property
    def with_trial(self) -> bool:
        return self.recurring and self.product.trial is not None


# --- what a provider answers (the client protocol's shapes) ------------------------------


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    session_id: str
    checkout_url: str


@dataclass(frozen=True, slots=True)
class PaymentSheet:
    customer_id: str
    customer_ephemeral_key_secret: str
    payment_intent_client_secret: str | None = None
    subscription_id: str | None = None
    setup_intent_client_secret: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentSetup:
    customer_id: str
    ephemeral_key: str
    setup_intent_id: str
    setup_intent_client_secret: str


@dataclass(frozen=True, slots=True)
class DirectSubscription:
    subscription_id: str
    status: str
    trial_end: datetime | None


@dataclass(frozen=True, slots=True)
class StartedPurchase:
    purchase_method: str
    product_id: str
    product_type: str
    checkout: CheckoutSession | None = None
    payment_sheet: PaymentSheet | None = None
    setup: PaymentSetup | None = None
    subscription: DirectSubscription | None = None


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    success: bool
    status: str
    will_cancel_at_period_end: bool
    cancels_at: datetime | None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class PlanChangeOutcome:
    success: bool
    change_type: str
    billing_mode: str
    status: str
    effective_at: datetime
    message: str | None = None


@dataclass(frozen=True, slots=True)
class AttachOutcome:
    mode: str
    checkout: CheckoutSession | None = None
    payment_sheet: PaymentSheet | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """A customer's subscription, loaded and checked, for a provider to act on."""

    app: app_store.AppRow
    customer: customer_store.CustomerRow
    catalog: Catalog
    source: source_store.SourceRow
    product: Product
    now: datetime


class PurchaseProvider(Protocol):
    """What a provider does for the purchase endpoints. Each call runs its own
    transactions: a provider that calls out over the network must not hold one open."""

    name: Provider

    def start(self, ctx: ServiceContext, order: Order) -> StartedPurchase: ...

    def cancel(self, ctx: ServiceContext, held: Held, mode: CancelMode) -> CancelOutcome: ...

    def uncancel(self, ctx: ServiceContext, held: Held) -> None: ...

    def change_plan(
        self, ctx: ServiceContext, held: Held, new_product: Product
    ) -> PlanChangeOutcome: ...

    def attach_payment_method(
        self,
        ctx: ServiceContext,
        held: Held,
        mode: str,
        success_url: str | None,
        cancel_url: str | None,
        public_base_url: str,
    ) -> AttachOutcome: ...


def cancel_outcome(sub: Subscription) -> CancelOutcome:
    """The answer to a cancel, from the subscription's state after it."""
    if sub.cancel_at_period_end:
        return CancelOutcome(
            True,
            sub.status.value,
            True,
            sub.period_end,
            "the subscription ends at the end of its current period",
        )
    return CancelOutcome(True, sub.status.value, False, sub.ended_at, "canceled: access ended")


_PLAN_CHANGE_MESSAGES = {
    "pending": "the new plan starts at the end of the current period",
    "access_applied": "the new plan applies now",
    "canceled": "the pending plan change was dropped",
}


def plan_change_outcome(change: PendingChange) -> PlanChangeOutcome:
    """The answer to a plan change, from the change as decided."""
    return PlanChangeOutcome(
        True,
        change.type.value,
        change.billing_mode.value,
        change.status.value,
        change.effective_at,
        _PLAN_CHANGE_MESSAGES.get(change.status.value),
    )


def plan_of(product: Product) -> Plan:
    """What the lifecycle needs of a recurring product."""
    if product.recurring_interval is None:
        raise InvariantViolation(f"product {product.id} is not recurring: only those have a plan")
    return Plan(product.id, product.recurring_interval, product.price or 0)


# --- validation ----------------------------------------------------------------------------


def choice(value: Any, allowed: tuple[str, ...], field: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be one of {', '.join(allowed)}", field=field
        )
    return value


def check_url(value: Any, field: str, app: app_store.AppRow) -> str | None:
    """Where a checkout sends the customer back (None when not given): a URL on the app's
    return URL list, or with no list an absolute http(s) URL (`engine.return_urls`)."""
    return check_return_url(value, field, app.return_urls)


def live_subscription(
    conn: Connection, catalog: Catalog, customer_id: str, product: Product
) -> source_store.SourceRow | None:
    """The customer's live paid subscription that buying `product` would duplicate: any
    base plan for a subscription product, the same add-on for a recurring add-on."""
    for source in source_store.list_sources(conn, customer_id):
        if source.kind != "subscription" or source.status not in LIVE_STATUSES:
            continue
        held = catalog.products_by_id.get(source.product_id or "")
        if product.type is ProductType.SUBSCRIPTION and (
            held is None or held.type is ProductType.SUBSCRIPTION
        ):
            return source
        if source.product_id == product.id:
            return source
    return None
