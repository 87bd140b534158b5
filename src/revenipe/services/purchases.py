"""Purchases and subscription changes asked for by a customer (the client protocol's
purchase endpoints), whichever provider sells the product.

Here are the checks every provider shares: the product exists and can be bought, the
customer holds no live subscription already, the source named is the customer's own
and a subscription this server manages. The provider then does the rest: the sandbox
(`services.sandbox`) at once; Stripe (`services.stripe_billing`) through Stripe's API,
access following when Stripe confirms the payment. An app sells through one provider:
the sandbox if it is a sandbox app, else Stripe once it is configured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product, ProductType
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.subscriptions import (
    LIVE_STATUSES,
    CancelMode,
    PendingChange,
    Plan,
    Subscription,
)
from revenipe.services import access
from revenipe.services.context import ServiceContext
from revenipe.storage import repository as repo

PURCHASE_METHODS = ("hosted_checkout", "payment_sheet")
TRIAL_BEHAVIORS = ("direct", "setup_intent")
MAX_URL_LENGTH = 2048
MAX_EXTRA_PARAMS = 20
_URL = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)

STRIPE = "stripe"
REVENUECAT = "revenuecat"
STORE_PROVIDERS = (REVENUECAT,)
"""Sources sold by an app store: the customer manages them in the store."""


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

    app: repo.AppRow
    customer: repo.CustomerRow
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

    app: repo.AppRow
    customer: repo.CustomerRow
    catalog: Catalog
    source: repo.SourceRow
    product: Product
    now: datetime


class PurchaseProvider(Protocol):
    """What a provider does for the purchase endpoints. Each call runs its own
    transactions: a provider that calls out over the network must not hold one open."""

    name: str

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


def _provider_named(name: str) -> PurchaseProvider:
    if name == access.SANDBOX:
        from revenipe.services.sandbox import SandboxProvider

        return SandboxProvider()
    if name == STRIPE:
        from revenipe.services.stripe_billing import StripeProvider

        return StripeProvider()
    raise RevenipeError(
        ErrorCode.SOURCE_NOT_MANAGEABLE,
        f"subscriptions of provider {name!r} cannot be changed through this server",
        field="source_id",
    )


def seller_of(conn: Connection, app: repo.AppRow) -> str:
    """The provider an app sells through, or `purchases_not_configured`."""
    if app.sandbox:
        return access.SANDBOX
    if repo.get_provider_settings(conn, app.id, STRIPE) is not None:
        return STRIPE
    raise RevenipeError(
        ErrorCode.PURCHASES_NOT_CONFIGURED,
        "this app sells nothing yet: configure Stripe (`revenipe stripe configure`, or PUT "
        "/v1/providers/stripe), or use a sandbox app (`revenipe apps create --sandbox`)",
    )


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
    assert product.recurring_interval is not None, "only recurring products have a plan"
    return Plan(product.id, product.recurring_interval, product.price or 0)


# --- validation ----------------------------------------------------------------------------


def _choice(value: Any, allowed: tuple[str, ...], field: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be one of {', '.join(allowed)}", field=field
        )
    return value


def check_url(value: Any, field: str) -> str | None:
    """An absolute http(s) URL (where a checkout sends the customer back), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH or not _URL.match(value):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters",
            field=field,
        )
    return value


def _check_request(request: PurchaseRequest) -> PurchaseRequest:
    _choice(request.purchase_method, PURCHASE_METHODS, "purchase_method")
    if request.trial_payment_method_behavior is not None:
        _choice(
            request.trial_payment_method_behavior,
            TRIAL_BEHAVIORS,
            "trial_payment_method_behavior",
        )
    check_url(request.success_url, "success_url")
    check_url(request.cancel_url, "cancel_url")
    params = request.extra_params or {}
    if len(params) > MAX_EXTRA_PARAMS or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"extra_params must map at most {MAX_EXTRA_PARAMS} strings to strings",
            field="extra_params",
        )
    return request


def _purchasable(catalog: Catalog, product_id: Any) -> Product:
    product = catalog.products_by_id.get(product_id) if isinstance(product_id, str) else None
    if product is None:
        raise RevenipeError(
            ErrorCode.PRODUCT_NOT_FOUND,
            f"no product {product_id!r} in the app's catalog",
            field="product_id",
        )
    if not product.purchasable:
        raise RevenipeError(
            ErrorCode.PRODUCT_NOT_PURCHASABLE,
            f"{product.id!r} is a default product: every customer has it already",
            field="product_id",
        )
    return product


def live_subscription(
    conn: Connection, catalog: Catalog, customer_id: str, product: Product
) -> repo.SourceRow | None:
    """The customer's live paid subscription that buying `product` would duplicate: any
    base plan for a subscription product, the same add-on for a recurring add-on."""
    for source in repo.list_sources(conn, customer_id):
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


# --- the operations --------------------------------------------------------------------


def start_purchase(
    ctx: ServiceContext,
    app_id: str,
    customer_id: str,
    request: PurchaseRequest,
    *,
    public_base_url: str,
) -> StartedPurchase:
    """Begin buying a product for a customer: a checkout page, a payment sheet's
    secrets, a setup for a trial's payment method, or a trial started at once."""
    request = _check_request(request)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        catalog = ctx.catalog(conn, app)
        customer = _customer(conn, app.id, customer_id)
        product = _purchasable(catalog, request.product_id)
        if product.recurring_interval is not None:
            existing = live_subscription(conn, catalog, customer.id, product)
            if existing is not None:
                raise RevenipeError(
                    ErrorCode.SUBSCRIPTION_EXISTS,
                    f"the customer already has the live subscription {existing.id}; "
                    "change its plan instead",
                    field="product_id",
                )
        provider = _provider_named(seller_of(conn, app))
    order = Order(app, customer, catalog, product, request, now, public_base_url)
    return provider.start(ctx, order)


def _customer(conn: Connection, app_id: str, customer_id: str) -> repo.CustomerRow:
    customer = repo.find_customer(conn, app_id, customer_id=customer_id)
    if customer is None:
        raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
    return customer


def held_subscription(
    ctx: ServiceContext, app_id: str, customer_id: str, source_id: Any
) -> tuple[Held, PurchaseProvider]:
    """The customer's own subscription `source_id` and the provider that manages it.

    Another customer's source is answered exactly like one that does not exist.
    """
    if not isinstance(source_id, str) or not source_id or len(source_id) > 64:
        raise RevenipeError(ErrorCode.INVALID_ID, "source_id must be an id", field="source_id")
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        customer = _customer(conn, app.id, customer_id)
        source = repo.get_source(conn, customer.id, source_id)
        if source is None:
            raise RevenipeError(
                ErrorCode.ACCESS_SOURCE_NOT_FOUND,
                "this customer has no access source with that id",
                field="source_id",
            )
        if source.provider in STORE_PROVIDERS:
            raise RevenipeError(
                ErrorCode.SOURCE_NOT_MANAGEABLE,
                "this subscription was bought in an app store; the customer manages it there",
                field="source_id",
            )
        if source.kind != "subscription" or not access.is_subscription(source):
            raise RevenipeError(
                ErrorCode.SOURCE_NOT_MANAGEABLE,
                "this access source is not a subscription the customer bought; the app "
                "granted it, so only the app can end it",
                field="source_id",
            )
        catalog = ctx.catalog(conn, app)
        product = catalog.products_by_id.get(source.product_id or "")
        if product is None:
            raise RevenipeError(
                ErrorCode.SOURCE_NOT_MANAGEABLE,
                f"this subscription's product {source.product_id!r} is no longer in the "
                "catalog; change it through the provider",
                field="source_id",
            )
        held = Held(app, customer, catalog, source, product, ctx.now_for(app))
    return held, _provider_named(source.provider)


def cancel_subscription(
    ctx: ServiceContext, app_id: str, customer_id: str, source_id: Any, cancel_mode: Any
) -> CancelOutcome:
    """Cancel at period end (access until then) or immediately (access ends now)."""
    mode = CancelMode(_choice(cancel_mode, tuple(CancelMode), "cancel_mode"))
    held, provider = held_subscription(ctx, app_id, customer_id, source_id)
    return provider.cancel(ctx, held, mode)


def uncancel_subscription(
    ctx: ServiceContext, app_id: str, customer_id: str, source_id: Any
) -> None:
    """Undo a cancel at period end: the subscription renews again."""
    held, provider = held_subscription(ctx, app_id, customer_id, source_id)
    provider.uncancel(ctx, held)


def change_plan(
    ctx: ServiceContext, app_id: str, customer_id: str, source_id: Any, new_product_id: Any
) -> PlanChangeOutcome:
    """Move a subscription to another plan: upgrades now, downgrades at period end."""
    held, provider = held_subscription(ctx, app_id, customer_id, source_id)
    new_product = _purchasable(held.catalog, new_product_id)
    if new_product.type is not held.product.type or new_product.recurring_interval is None:
        raise RevenipeError(
            ErrorCode.PLAN_CHANGE_NOT_ALLOWED,
            f"a {held.product.type.value} can only change to another recurring "
            f"{held.product.type.value}; {new_product.id!r} is a {new_product.type.value}",
            field="new_product_id",
        )
    return provider.change_plan(ctx, held, new_product)


def attach_payment_method(
    ctx: ServiceContext,
    app_id: str,
    customer_id: str,
    source_id: Any,
    mode: Any,
    *,
    success_url: Any = None,
    cancel_url: Any = None,
    public_base_url: str,
) -> AttachOutcome:
    """Collect a payment method for a subscription (a trial converts when it ends)."""
    method = _choice(mode, PURCHASE_METHODS, "mode")
    success = check_url(success_url, "success_url")
    cancel = check_url(cancel_url, "cancel_url")
    held, provider = held_subscription(ctx, app_id, customer_id, source_id)
    if held.source.status not in LIVE_STATUSES:
        raise RevenipeError(
            ErrorCode.SUBSCRIPTION_NOT_ACTIVE,
            f"this subscription is {held.source.status}",
            field="source_id",
        )
    return provider.attach_payment_method(ctx, held, method, success, cancel, public_base_url)
