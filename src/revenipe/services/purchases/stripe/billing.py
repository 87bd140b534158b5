"""The Stripe provider: the client protocol's purchase operations through Stripe's API.

- Hosted checkout: a Checkout Session (mode `payment` for one-time products,
  `subscription` for recurring ones, with the catalog's trial), answered as its URL.
- Payment sheet: the customer's Stripe customer (made once, under an idempotency key,
  linked in `provider_customers`) and an ephemeral key, with a PaymentIntent for a
  one-time product, or a subscription created `default_incomplete` for a recurring one
  (its first invoice's secret, or on trial its pending SetupIntent's).
- A direct trial (no payment UI): the subscription starts trialing at once; without a
  payment method by the trial's end Stripe cancels it.
- Cancel, uncancel, change plan (upgrades now with Stripe's proration, invoiced at
  once; downgrades at the period's end through a subscription schedule, shown as the
  source's `pending_change`), attach a payment method (a `setup` Checkout or a
  SetupIntent; the webhook makes it the subscription's default).

Access follows Stripe's state: what Stripe answers to our own calls is applied at once
(`services.stripe_sync`), and webhooks bring the rest (`services.stripe_webhooks`). A
subscription's plan changes made here are written into its metadata, so a later read
of it tells the whole history. No database transaction is open during a call to Stripe.

The price: the catalog product's `stripe_price_id`, else (Checkout only) `price_data`
from its `price` and `currency`; elsewhere a product needs its `stripe_price_id`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from revenipe.catalog import Product
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.engine.subscriptions import BillingMode, CancelMode, ChangeStatus, Subscription
from revenipe.providers import stripe_objects as so
from revenipe.providers.stripe_gateway import StripeGateway
from revenipe.services import access
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.purchases.stripe import settings as stripe_settings
from revenipe.services.purchases.stripe import sync as stripe_sync
from revenipe.services.purchases.vocabulary import (
    AttachOutcome,
    CancelOutcome,
    CheckoutSession,
    DirectSubscription,
    Held,
    Order,
    PaymentSetup,
    PaymentSheet,
    PlanChangeOutcome,
    StartedPurchase,
    cancel_outcome,
    plan_change_outcome,
    plan_of,
)
from revenipe.storage import repository as repo

COMPLETE_PATH = "/v1/stripe/checkout/complete"
"""Our own page a Checkout returns to when the client gave no success_url."""
MAX_EXTRA_KEY = 40
"""Stripe's limit on a metadata key; `extra_params` become metadata."""


def _refuse(product: Product, why: str) -> RevenipeError:
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
        raise _refuse(product, "give it a stripe_price_id, or a price and a currency")
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
        raise _refuse(
            product,
            "a subscription created or changed through Stripe's API needs the product's "
            "stripe_price_id (hosted checkout can sell its price and currency instead)",
        )
    return product.stripe_price_id


def _trial(product: Product, now: datetime) -> dict[str, Any]:
    """A trial's length in Stripe's terms: whole days, or an end instant."""
    trial = product.trial
    if trial is None:
        return {}
    if trial.months == 0 and trial.seconds == 0:
        return {"trial_period_days": trial.days}
    return {"trial_end": so.unix(trial.after(now))}


_TRIAL_ENDS_WITHOUT_PAYMENT_METHOD = {"end_behavior": {"missing_payment_method": "cancel"}}
"""As the sandbox: a trial without a payment method by its end ends with it."""


def _metadata(order_or_held: Order | Held, product: Product, **extra: str | None) -> dict[str, str]:
    values = {
        so.APP_KEY: order_or_held.app.id,
        so.CUSTOMER_KEY: order_or_held.customer.id,
        so.PRODUCT_KEY: product.id,
    }
    values.update({k: v for k, v in extra.items() if v is not None})
    return values


def _with_extra(metadata: dict[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
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


def _key(app_id: str, what: str) -> str:
    """An idempotency key for one new object: a retry of the same call makes it once."""
    return f"revenipe:{app_id}:{what}:{secrets.token_hex(12)}"


def stripe_customer(
    ctx: ServiceContext, gateway: StripeGateway, app: repo.AppRow, customer: repo.CustomerRow
) -> str:
    """The customer's Stripe customer, made on first need. Concurrent first purchases
    send one idempotency key, so Stripe makes one customer; the first link wins."""
    with ctx.db.read() as conn:
        found = repo.provider_customer_id(conn, app.id, Provider.STRIPE, customer.id)
    if found is not None:
        return found
    created = gateway.create_customer(
        metadata={so.APP_KEY: app.id, so.CUSTOMER_KEY: customer.id},
        idempotency_key=f"revenipe:{app.id}:customer:{customer.id}",
    )
    with ctx.db.write() as conn:
        repo.link_provider_customer(
            conn, app.id, Provider.STRIPE, customer.id, str(created["id"]), ctx.now()
        )
        linked = repo.provider_customer_id(conn, app.id, Provider.STRIPE, customer.id)
    assert linked is not None
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


def _subscription_params(
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
        params["trial_settings"] = _TRIAL_ENDS_WITHOUT_PAYMENT_METHOD
        params.update(_trial(order.product, order.now))
    return params


def _ephemeral_secret(gateway: StripeGateway, stripe_customer_id: str) -> str:
    return str(gateway.create_ephemeral_key(stripe_customer_id)["secret"])


class StripeProvider:
    """The purchase endpoints for a live app configured with Stripe."""

    name = Provider.STRIPE

    def start(self, ctx: ServiceContext, order: Order) -> StartedPurchase:
        request = order.request
        product = order.product
        started = StartedPurchase(
            purchase_method=request.purchase_method,
            product_id=product.id,
            product_type=product.type.value,
        )
        # Refuse what Stripe would refuse before making anything there.
        direct = order.with_trial and request.trial_payment_method_behavior == "direct"
        via_api = direct or (order.recurring and request.purchase_method == "payment_sheet")
        price_id = subscription_price(product) if via_api else None
        line_item = (
            checkout_line_item(product)
            if not via_api and request.purchase_method == "hosted_checkout"
            else None
        )
        reserved = new_id("src") if order.recurring else None
        metadata = _with_extra(
            _metadata(order, product, **{so.SOURCE_KEY: reserved}), request.extra_params
        )
        app, _, gateway = stripe_settings.connect(ctx, order.app.id)
        customer = stripe_customer(ctx, gateway, app, order.customer)
        if direct:
            assert price_id is not None
            obj = gateway.create_subscription(
                _subscription_params(order, customer, price_id, metadata),
                idempotency_key=_key(app.id, "subscription"),
            )
            applied = apply_subscription(ctx, app.id, order.customer.id, obj)
            source_id = applied.source.id if applied.source else reserved
            assert source_id is not None
            view = so.read_subscription(obj)
            subscription = DirectSubscription(source_id, view.status, view.trial_end)
            return replace(started, subscription=subscription)
        if line_item is not None:
            session = gateway.create_checkout_session(
                self._checkout(order, customer, line_item, metadata),
                idempotency_key=_key(app.id, "checkout"),
            )
            checkout = CheckoutSession(str(session["id"]), str(session["url"]))
            return replace(started, checkout=checkout)
        ephemeral = _ephemeral_secret(gateway, customer)
        if not order.recurring:
            amount, currency = self._one_time_price(gateway, product)
            intent = gateway.create_payment_intent(
                {
                    "amount": amount,
                    "currency": currency,
                    "customer": customer,
                    "metadata": metadata,
                    "automatic_payment_methods": {"enabled": True},
                },
                idempotency_key=_key(app.id, "payment_intent"),
            )
            sheet = PaymentSheet(
                customer, ephemeral, payment_intent_client_secret=str(intent["client_secret"])
            )
            return replace(started, payment_sheet=sheet)
        assert price_id is not None
        obj = gateway.create_subscription(
            {
                **_subscription_params(order, customer, price_id, metadata),
                "expand": ["latest_invoice.confirmation_secret", "pending_setup_intent"],
            },
            idempotency_key=_key(app.id, "subscription"),
        )
        # On trial it is live already (trialing); otherwise it waits for its payment.
        apply_subscription(ctx, app.id, order.customer.id, obj)
        setup_intent = so.pending_setup_intent(obj)
        if setup_intent is not None:
            secret = str(setup_intent["client_secret"])
            if request.trial_payment_method_behavior == "setup_intent":
                setup = PaymentSetup(customer, ephemeral, str(setup_intent["id"]), secret)
                return replace(started, setup=setup)
            sheet = PaymentSheet(
                customer, ephemeral, subscription_id=reserved, setup_intent_client_secret=secret
            )
            return replace(started, payment_sheet=sheet)
        payment_secret = so.first_payment_secret(obj)
        if payment_secret is None:
            raise RevenipeError(
                ErrorCode.PROVIDER_ERROR,
                f"Stripe made subscription {obj.get('id')} with nothing to pay or set up",
            )
        sheet = PaymentSheet(
            customer,
            ephemeral,
            payment_intent_client_secret=payment_secret,
            subscription_id=reserved,
        )
        return replace(started, payment_sheet=sheet)

    def _checkout(
        self,
        order: Order,
        customer: str,
        line_item: dict[str, Any],
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "mode": "subscription" if order.recurring else "payment",
            "customer": customer,
            "client_reference_id": order.customer.id,
            "line_items": [line_item],
            "success_url": order.request.success_url or _complete_url(order.public_base_url),
            "metadata": metadata,
        }
        if order.request.cancel_url:
            params["cancel_url"] = order.request.cancel_url
        if order.recurring:
            params["subscription_data"] = {"metadata": metadata}
            if order.with_trial:
                params["subscription_data"].update(
                    {
                        "trial_settings": _TRIAL_ENDS_WITHOUT_PAYMENT_METHOD,
                        **_trial(order.product, order.now),
                    }
                )
        else:
            params["payment_intent_data"] = {"metadata": metadata}
        return params

    def _one_time_price(self, gateway: StripeGateway, product: Product) -> tuple[int, str]:
        if product.stripe_price_id:
            price = gateway.retrieve_price(product.stripe_price_id)
            amount, currency = price.get("unit_amount"), price.get("currency")
            if price.get("recurring") is not None or not isinstance(amount, int) or not currency:
                raise _refuse(
                    product, f"its Stripe Price {product.stripe_price_id} is not a one-time amount"
                )
            return amount, str(currency)
        if not product.price or not product.currency:
            raise _refuse(product, "give it a stripe_price_id, or a price and a currency")
        return product.price, product.currency

    # --- changing a subscription -----------------------------------------------------

    def cancel(self, ctx: ServiceContext, held: Held, mode: CancelMode) -> CancelOutcome:
        lifecycle.cancel(_held_state(held), mode, held.now)
        _, _, gateway = stripe_settings.connect(ctx, held.app.id)
        reference = _reference(held)
        _release_schedule(gateway, reference)
        if mode is CancelMode.IMMEDIATELY:
            obj = gateway.cancel_subscription(reference)
        else:
            obj = gateway.update_subscription(reference, {"cancel_at_period_end": True})
        return cancel_outcome(_applied_state(ctx, held, obj))

    def uncancel(self, ctx: ServiceContext, held: Held) -> None:
        lifecycle.uncancel(_held_state(held))
        _, _, gateway = stripe_settings.connect(ctx, held.app.id)
        obj = gateway.update_subscription(_reference(held), {"cancel_at_period_end": False})
        _applied_state(ctx, held, obj)

    def change_plan(
        self, ctx: ServiceContext, held: Held, new_product: Product
    ) -> PlanChangeOutcome:
        decided = lifecycle.change_plan(
            _held_state(held),
            plan_of(held.product),
            plan_of(new_product),
            held.now,
            change_id="decision",
        ).change
        new_price = (
            None if decided.status is ChangeStatus.CANCELED else subscription_price(new_product)
        )
        _, _, gateway = stripe_settings.connect(ctx, held.app.id)
        reference = _reference(held)
        view = stripe_sync.read_subscription(gateway, reference)
        if decided.status is ChangeStatus.CANCELED:
            _release_schedule(gateway, reference, view)
            obj = gateway.retrieve_subscription(reference)
        elif decided.billing_mode is BillingMode.IMMEDIATE:
            assert new_price is not None and view.item_id is not None
            _release_schedule(gateway, reference, view)
            change = so.PlanChange(held.product.id, new_product.id, held.now)
            obj = gateway.update_subscription(
                reference,
                {
                    "items": [{"id": view.item_id, "price": new_price}],
                    "proration_behavior": "always_invoice",
                    "proration_date": so.unix(held.now),
                    "metadata": {
                        so.PRODUCT_KEY: new_product.id,
                        so.PLAN_CHANGES_KEY: so.format_plan_changes([*view.plan_changes, change]),
                    },
                },
            )
        else:
            assert new_price is not None
            self._schedule_downgrade(gateway, held, view, new_product, new_price)
            obj = gateway.retrieve_subscription(reference)
        applied = _applied_state(ctx, held, obj)
        # A downgrade takes effect when Stripe's schedule says (our period may be stale).
        scheduled = applied.pending_change if decided.status is ChangeStatus.PENDING else None
        return plan_change_outcome(scheduled or decided)

    def _schedule_downgrade(
        self,
        gateway: StripeGateway,
        held: Held,
        view: so.SubscriptionView,
        new_product: Product,
        new_price: str,
    ) -> None:
        """The current price until the period's end, then the new one (whose phase also
        writes the change into the subscription's metadata), then the schedule lets go."""
        assert new_product.recurring_interval is not None and view.price_id is not None
        schedule_id = view.schedule_id
        if schedule_id is None:
            schedule = gateway.create_schedule(
                view.id, idempotency_key=_key(held.app.id, "schedule")
            )
            schedule_id = str(schedule["id"])
            current_start = so.unix(view.period_start)
            phases = schedule.get("phases") or []
            if phases and isinstance(phases[0].get("start_date"), int):
                current_start = phases[0]["start_date"]
        else:
            current_start = so.unix(view.period_start)
        change = so.PlanChange(held.product.id, new_product.id, view.period_end)
        current_phase: dict[str, Any] = {
            "items": [{"price": view.price_id, "quantity": 1}],
            "start_date": current_start,
            "end_date": so.unix(view.period_end),
        }
        if view.status == "trialing" and view.trial_end is not None:
            current_phase["trial_end"] = so.unix(view.trial_end)
        gateway.update_schedule(
            schedule_id,
            {
                "end_behavior": "release",
                "phases": [
                    current_phase,
                    {
                        "items": [{"price": new_price, "quantity": 1}],
                        "duration": {
                            "interval": new_product.recurring_interval.value,
                            "interval_count": 1,
                        },
                        "proration_behavior": "none",
                        "metadata": {
                            so.PRODUCT_KEY: new_product.id,
                            so.PLAN_CHANGES_KEY: so.format_plan_changes(
                                [*view.plan_changes, change]
                            ),
                        },
                    },
                ],
            },
        )

    def attach_payment_method(
        self,
        ctx: ServiceContext,
        held: Held,
        mode: str,
        success_url: str | None,
        cancel_url: str | None,
        public_base_url: str,
    ) -> AttachOutcome:
        lifecycle.attach_payment_method(_held_state(held))
        app, _, gateway = stripe_settings.connect(ctx, held.app.id)
        customer = stripe_customer(ctx, gateway, app, held.customer)
        reference = _reference(held)
        metadata = _metadata(
            held,
            held.product,
            **{so.SOURCE_KEY: held.source.id, so.SUBSCRIPTION_KEY: reference},
        )
        if mode == "hosted_checkout":
            view = stripe_sync.read_subscription(gateway, reference)
            params: dict[str, Any] = {
                "mode": "setup",
                "customer": customer,
                "client_reference_id": held.customer.id,
                "currency": view.currency or held.product.currency or "usd",
                "success_url": success_url or _complete_url(public_base_url),
                "metadata": metadata,
                "setup_intent_data": {"metadata": metadata},
            }
            if cancel_url:
                params["cancel_url"] = cancel_url
            session = gateway.create_checkout_session(params, idempotency_key=_key(app.id, "setup"))
            return AttachOutcome(
                mode, checkout=CheckoutSession(str(session["id"]), str(session["url"]))
            )
        intent = gateway.create_setup_intent(
            {
                "customer": customer,
                "usage": "off_session",
                "metadata": metadata,
                "automatic_payment_methods": {"enabled": True},
            },
            idempotency_key=_key(app.id, "setup_intent"),
        )
        sheet = PaymentSheet(
            customer,
            _ephemeral_secret(gateway, customer),
            setup_intent_client_secret=str(intent["client_secret"]),
        )
        return AttachOutcome(mode, payment_sheet=sheet)


def _complete_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}{COMPLETE_PATH}?session_id={{CHECKOUT_SESSION_ID}}"


def _held_state(held: Held) -> Subscription:
    return access.subscription_of(held.source)


def _reference(held: Held) -> str:
    if held.source.provider_ref is None:
        raise RevenipeError(
            ErrorCode.SOURCE_NOT_MANAGEABLE,
            "this Stripe subscription has no Stripe id on record",
            field="source_id",
        )
    return held.source.provider_ref


def _release_schedule(
    gateway: StripeGateway, reference: str, view: so.SubscriptionView | None = None
) -> None:
    """Let go of the subscription's schedule (a pending downgrade): a cancel or another
    plan change replaces it, and Stripe refuses those while a schedule holds it."""
    view = view or stripe_sync.read_subscription(gateway, reference)
    if view.schedule_id is not None:
        gateway.release_schedule(view.schedule_id)


def _applied_state(ctx: ServiceContext, held: Held, obj: Mapping[str, Any]) -> Subscription:
    applied = apply_subscription(ctx, held.app.id, held.customer.id, obj)
    source = applied.source
    if source is None:
        raise RevenipeError(
            ErrorCode.PROVIDER_ERROR, f"Stripe's answer could not be applied: {applied.detail}"
        )
    return access.subscription_of(source)
