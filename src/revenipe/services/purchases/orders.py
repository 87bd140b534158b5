"""Purchases and subscription changes asked for by a customer (the client protocol's
purchase endpoints), whichever provider sells the product.

Here are the checks every provider shares: the product exists and can be bought, the
customer holds no live subscription already, the source named is the customer's own
and a subscription this server manages. The provider then does the rest: the sandbox
(`purchases.sandbox`) at once; Stripe (`purchases.stripe.billing`) through Stripe's API,
access following when Stripe confirms the payment. An app sells through one provider:
the sandbox if it is a sandbox app, else Stripe once it is configured.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.sources import STORE_PROVIDERS, Provider
from revenipe.engine.subscriptions import (
    LIVE_STATUSES,
    CancelMode,
)
from revenipe.services import access
from revenipe.services.context import ServiceContext
from revenipe.services.purchases.vocabulary import (
    MAX_EXTRA_PARAMS,
    PURCHASE_METHODS,
    TRIAL_BEHAVIORS,
    AttachOutcome,
    CancelOutcome,
    Held,
    Order,
    PlanChangeOutcome,
    PurchaseProvider,
    PurchaseRequest,
    StartedPurchase,
    check_url,
    choice,
    live_subscription,
)
from revenipe.storage import apps as app_store
from revenipe.storage import customers as customer_store
from revenipe.storage import sources as source_store


def _provider_named(name: str) -> PurchaseProvider:
    # Imported on first use: the Stripe provider loads the stripe library, which a
    # process that never sells through Stripe should not pay for.
    if name == Provider.SANDBOX:
        from revenipe.services.purchases.sandbox.provider import SandboxProvider

        return SandboxProvider()
    if name == Provider.STRIPE:
        from revenipe.services.purchases.stripe.billing import StripeProvider

        return StripeProvider()
    raise RevenipeError(
        ErrorCode.SOURCE_NOT_MANAGEABLE,
        f"subscriptions of provider {name!r} cannot be changed through this server",
        field="source_id",
    )


def seller_of(conn: Connection, app: app_store.AppRow) -> str:
    """The provider an app sells through, or `purchases_not_configured`."""
    if app.sandbox:
        return Provider.SANDBOX
    if app_store.get_provider_settings(conn, app.id, Provider.STRIPE) is not None:
        return Provider.STRIPE
    raise RevenipeError(
        ErrorCode.PURCHASES_NOT_CONFIGURED,
        "this app sells nothing yet: configure Stripe (`revenipe stripe configure`, or PUT "
        "/v1/providers/stripe), or use a sandbox app (`revenipe apps create --sandbox`)",
    )


def _check_request(request: PurchaseRequest) -> PurchaseRequest:
    choice(request.purchase_method, PURCHASE_METHODS, "purchase_method")
    if request.trial_payment_method_behavior is not None:
        choice(
            request.trial_payment_method_behavior,
            TRIAL_BEHAVIORS,
            "trial_payment_method_behavior",
        )
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
        check_url(request.success_url, "success_url", app)
        check_url(request.cancel_url, "cancel_url", app)
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


def _customer(conn: Connection, app_id: str, customer_id: str) -> customer_store.CustomerRow:
    customer = customer_store.find_customer(conn, app_id, customer_id=customer_id)
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
        source = source_store.get_source(conn, customer.id, source_id)
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
    mode = CancelMode(choice(cancel_mode, tuple(CancelMode), "cancel_mode"))
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
    method = choice(mode, PURCHASE_METHODS, "mode")
    held, provider = held_subscription(ctx, app_id, customer_id, source_id)
    success = check_url(success_url, "success_url", held.app)
    cancel = check_url(cancel_url, "cancel_url", held.app)
    if held.source.status not in LIVE_STATUSES:
        raise RevenipeError(
            ErrorCode.SUBSCRIPTION_NOT_ACTIVE,
            f"this subscription is {held.source.status}",
            field="source_id",
        )
    return provider.attach_payment_method(ctx, held, method, success, cancel, public_base_url)
