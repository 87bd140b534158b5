"""What the Stripe provider's calls are made of, whether they start a purchase or change
one: the customer's Stripe customer, the price and line item a product sells at, a
trial in Stripe's terms, our metadata (and the client's beside it), idempotency keys,
and what Stripe answered about a subscription applied at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from revenipe.catalog import Product
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.providers import stripe_objects as so
from revenipe.providers.stripe_gateway import StripeGateway
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.purchases.stripe import sync as stripe_sync
from revenipe.services.purchases.vocabulary import Held, Order
from revenipe.storage import apps as app_store
from revenipe.storage import customers as customer_store

MAX_EXTRA_KEY = 40
"""Stripe's limit on a metadata key; `extra_params` become metadata."""


def refuse(product: Product, why: str) -> RevenipeError:
    """`product_not_purchasable`: Stripe would refuse to sell `product`, for `why`."""
    return RevenipeError(
        ErrorCode.PRODUCT_NOT_PURCHASABLE,
        f"{product.id!r} cannot be sold through Stripe: {why}",
        field="product_id",
    )


def checkout_line_item(product: Product) -> dict[str, Any]:
    """What a Checkout Session sells: the product's Stripe Price, or one made from the
    catalog's price (Checkout accepts `price_data` with `product_data`)."""
    if product.stripe_price_id:
        return {"price": product.stripe_price_id, "quantity": 1}
    if not product.price or not product.currency:
        raise refuse(product, "give it a stripe_price_id, or a price and a currency")
    price_data: dict[str, Any] = {
        "currency": product.currency,
        "unit_amount": product.price,
        "product_data": {"name": product.name, "metadata": {so.PRODUCT_KEY: product.id}},
    }
    if product.description:
        price_data["product_data"]["description"] = product.description
    if product.recurring_interval is not None:
        price_data["recurring"] = {"interval": product.recurring_interval.value}
    return {"price_data": price_data, "quantity": 1}


def subscription_price(product: Product) -> str:
    """The Stripe Price a subscription made or changed through the API bills: Stripe
    takes no `price_data` without a Stripe product there, so the catalog must name it."""
    if not product.stripe_price_id:
        raise refuse(
            product,
            "a subscription created or changed through Stripe's API needs the product's "
            "stripe_price_id (hosted checkout can sell its price and currency instead)",
        )
    return product.stripe_price_id


def trial_params(product: Product, now: datetime) -> dict[str, Any]:
    """A trial's length in Stripe's terms: whole days, or an end instant."""
    trial = product.trial
    if trial is None:
        return {}
    if trial.months == 0 and trial.seconds == 0:
        return {"trial_period_days": trial.days}
    return {"trial_end": so.unix(trial.after(now))}


TRIAL_ENDS_WITHOUT_PAYMENT_METHOD = {"end_behavior": {"missing_payment_method": "cancel"}}
"""As the sandbox: a trial without a payment method by its end ends with it."""


def metadata_of(
    order_or_held: Order | Held, product: Product, **extra: str | None
) -> dict[str, str]:
    """Our metadata on what a call makes: the app, the customer, the product, and
    `extra` keys (None values left out), so a later read of it tells whose it is."""
    values = {
        so.APP_KEY: order_or_held.app.id,
        so.CUSTOMER_KEY: order_or_held.customer.id,
        so.PRODUCT_KEY: product.id,
    }
    values.update({k: v for k, v in extra.items() if v is not None})
    return values


def with_extra(metadata: dict[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """The client's `extra_params`, as metadata beside ours (never over ours)."""
    merged = dict(metadata)
    for key, value in (extra or {}).items():
        if key.startswith("revenipe_") or not 0 < len(key) <= MAX_EXTRA_KEY:
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT,
                f"extra_params keys must be 1 to {MAX_EXTRA_KEY} characters, not starting "
                "with revenipe_ (they become Stripe metadata)",
                field="extra_params",
            )
        if len(value) > so.MAX_METADATA_VALUE:
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT,
                f"extra_params values are at most {so.MAX_METADATA_VALUE} characters",
                field="extra_params",
            )
        merged[key] = value
    return merged


def idempotency_key(app_id: str, what: str) -> str:
    """An idempotency key for one new object: a retry of the same call makes it once."""
    return f"revenipe:{app_id}:{what}:{secrets.token_hex(12)}"


def stripe_customer(
    ctx: ServiceContext,
    gateway: StripeGateway,
    app: app_store.AppRow,
    customer: customer_store.CustomerRow,
) -> str:
    """The customer's Stripe customer, made on first need. Concurrent first purchases
    send one idempotency key, so Stripe makes one customer; the first link wins."""
    with ctx.db.read() as conn:
        found = customer_store.find_provider_customer_id(conn, app.id, Provider.STRIPE, customer.id)
    if found is not None:
        return found
    created = gateway.create_customer(
        metadata={so.APP_KEY: app.id, so.CUSTOMER_KEY: customer.id},
        idempotency_key=f"revenipe:{app.id}:customer:{customer.id}",
    )
    with ctx.db.write() as conn:
        customer_store.insert_provider_customer(
            conn, app.id, Provider.STRIPE, customer.id, str(created["id"]), ctx.now()
        )
        linked = customer_store.find_provider_customer_id(
            conn, app.id, Provider.STRIPE, customer.id
        )
    if linked is None:
        raise InvariantViolation(
            f"customer {customer.id}: no Stripe customer right after linking one"
        )
    return linked


def apply_subscription(
    ctx: ServiceContext, app_id: str, customer_id: str, obj: Mapping[str, Any]
) -> stripe_sync.Applied:
    """Apply a subscription object Stripe just answered (our own call's effect)."""
    view = so.read_subscription(obj)
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        customer = locked_customer(
            ctx, conn, app, CustomerRef(customer_id=customer_id), create=False, now=now
        )
        return stripe_sync.sync_subscription(conn, ctx.catalog(conn, app), customer, view, now)


def subscription_params(
    order: Order, customer: str, price_id: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """A subscription made through the API: it waits for its first payment (or, on
    trial, for nothing), and the payment method it is paid with becomes its default."""
    params: dict[str, Any] = {
        "customer": customer,
        "items": [{"price": price_id}],
        "payment_behavior": "default_incomplete",
        "payment_settings": {"save_default_payment_method": "on_subscription"},
        "metadata": metadata,
    }
    if order.with_trial:
        params["trial_settings"] = TRIAL_ENDS_WITHOUT_PAYMENT_METHOD
        params.update(trial_params(order.product, order.now))
    return params


def ephemeral_secret(gateway: StripeGateway, stripe_customer_id: str) -> str:
    """A new ephemeral key's secret: what a payment sheet opens the customer with."""
    return str(gateway.create_ephemeral_key(stripe_customer_id)["secret"])
