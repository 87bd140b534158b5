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

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from revenipe.catalog import Product
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.engine.subscriptions import BillingMode, CancelMode, ChangeStatus, Subscription
from revenipe.providers import stripe_objects as so
from revenipe.providers.stripe_gateway import StripeGateway
from revenipe.services import access
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.purchases.stripe import calls
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

COMPLETE_PATH = "/v1/stripe/checkout/complete"
"""Our own page a Checkout returns to when the client gave no success_url."""


def _started(order: Order) -> StartedPurchase:
    """The answer every start gives, before what its purchase method adds."""
    return StartedPurchase(
        purchase_method=order.request.purchase_method,
        product_id=order.product.id,
        product_type=order.product.type.value,
    )


@dataclass(frozen=True, slots=True)
class _StripeCall:
    """An order about to be made at Stripe: the account, the Stripe customer, and the
    metadata every object it makes there carries."""

    ctx: ServiceContext
    order: Order
    app_id: str
    gateway: StripeGateway
    customer: str
    """The Stripe customer's id."""
    reserved: str | None
    """The id reserved for the source of the subscription (None for a payment)."""
    metadata: dict[str, str]


def _connect(ctx: ServiceContext, order: Order) -> _StripeCall:
    """Reserve the subscription's source id and write the metadata (refusing bad
    `extra_params`), then reach the app's Stripe account and its Stripe customer (made
    on first need)."""
    reserved = new_id("src") if order.recurring else None
    metadata = calls.with_extra(
        calls.metadata_of(order, order.product, **{so.SOURCE_KEY: reserved}),
        order.request.extra_params,
    )
    app, _, gateway = stripe_settings.connect(ctx, order.app.id)
    customer = calls.stripe_customer(ctx, gateway, app, order.customer)
    return _StripeCall(ctx, order, app.id, gateway, customer, reserved, metadata)


class StripeProvider:
    """The purchase endpoints for a live app configured with Stripe."""

    name = Provider.STRIPE

    def start(self, ctx: ServiceContext, order: Order) -> StartedPurchase:
        """Start a purchase at Stripe, in the way its method and trial behaviour ask:

        - a trial that starts "direct": a subscription made through the API, live now;
        - a subscription by payment sheet: made through the API, waiting for its first
          payment (on trial, for a payment method: a setup intent);
        - a hosted checkout: a Stripe Checkout session to send the customer to;
        - a one-time product by payment sheet: a payment intent.

        What Stripe would refuse (a subscription made through the API without the
        product's `stripe_price_id`, a one-time price Stripe cannot charge) raises
        `RevenipeError` before anything is made there; an app without Stripe settings
        raises `provider_not_configured`, and Stripe's own refusals `provider_error`.
        """
        request = order.request
        direct = order.with_trial and request.trial_payment_method_behavior == "direct"
        if direct or (order.recurring and request.purchase_method == "payment_sheet"):
            price_id = calls.subscription_price(order.product)
            call = _connect(ctx, order)
            if direct:
                return self._start_direct_subscription(call, price_id)
            return self._start_subscription_sheet(call, price_id)
        if request.purchase_method == "hosted_checkout":
            line_item = calls.checkout_line_item(order.product)
            return self._start_checkout(_connect(ctx, order), line_item)
        return self._start_payment_intent(_connect(ctx, order))

    def _start_direct_subscription(self, call: _StripeCall, price_id: str) -> StartedPurchase:
        """A trial that needs no payment method to start: the subscription is made, and
        applied at once (trialing)."""
        obj = call.gateway.create_subscription(
            calls.subscription_params(call.order, call.customer, price_id, call.metadata),
            idempotency_key=calls.idempotency_key(call.app_id, "subscription"),
        )
        applied = calls.apply_subscription(call.ctx, call.app_id, call.order.customer.id, obj)
        source_id = applied.source.id if applied.source else call.reserved
        if source_id is None:
            raise InvariantViolation("a subscription's start reserves the id of its source")
        view = so.read_subscription(obj)
        subscription = DirectSubscription(source_id, view.status, view.trial_end)
        return replace(_started(call.order), subscription=subscription)

    def _start_subscription_sheet(self, call: _StripeCall, price_id: str) -> StartedPurchase:
        """A subscription in the app: made now, it waits for what its payment sheet (or,
        on trial, its setup intent) confirms."""
        ephemeral = calls.ephemeral_secret(call.gateway, call.customer)
        obj = call.gateway.create_subscription(
            {
                **calls.subscription_params(call.order, call.customer, price_id, call.metadata),
                "expand": ["latest_invoice.confirmation_secret", "pending_setup_intent"],
            },
            idempotency_key=calls.idempotency_key(call.app_id, "subscription"),
        )
        # On trial it is live already (trialing); otherwise it waits for its payment.
        calls.apply_subscription(call.ctx, call.app_id, call.order.customer.id, obj)
        started = _started(call.order)
        setup_intent = so.pending_setup_intent(obj)
        if setup_intent is not None:
            secret = str(setup_intent["client_secret"])
            if call.order.request.trial_payment_method_behavior == "setup_intent":
                setup = PaymentSetup(call.customer, ephemeral, str(setup_intent["id"]), secret)
                return replace(started, setup=setup)
            sheet = PaymentSheet(
                call.customer,
                ephemeral,
                subscription_id=call.reserved,
                setup_intent_client_secret=secret,
            )
            return replace(started, payment_sheet=sheet)
        payment_secret = so.first_payment_secret(obj)
        if payment_secret is None:
            raise RevenipeError(
                ErrorCode.PROVIDER_ERROR,
                f"Stripe made subscription {obj.get('id')} with nothing to pay or set up",
            )
        sheet = PaymentSheet(
            call.customer,
            ephemeral,
            payment_intent_client_secret=payment_secret,
            subscription_id=call.reserved,
        )
        return replace(started, payment_sheet=sheet)

    def _start_checkout(self, call: _StripeCall, line_item: dict[str, Any]) -> StartedPurchase:
        """A hosted checkout: Stripe's page takes the payment (and starts any trial)."""
        session = call.gateway.create_checkout_session(
            self._checkout(call.order, call.customer, line_item, call.metadata),
            idempotency_key=calls.idempotency_key(call.app_id, "checkout"),
        )
        checkout = CheckoutSession(str(session["id"]), str(session["url"]))
        return replace(_started(call.order), checkout=checkout)

    def _start_payment_intent(self, call: _StripeCall) -> StartedPurchase:
        """A one-time product in the app: a payment intent for its price."""
        ephemeral = calls.ephemeral_secret(call.gateway, call.customer)
        amount, currency = self._one_time_price(call.gateway, call.order.product)
        intent = call.gateway.create_payment_intent(
            {
                "amount": amount,
                "currency": currency,
                "customer": call.customer,
                "metadata": call.metadata,
                "automatic_payment_methods": {"enabled": True},
            },
            idempotency_key=calls.idempotency_key(call.app_id, "payment_intent"),
        )
        sheet = PaymentSheet(
            call.customer, ephemeral, payment_intent_client_secret=str(intent["client_secret"])
        )
        return replace(_started(call.order), payment_sheet=sheet)

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
                        "trial_settings": calls.TRIAL_ENDS_WITHOUT_PAYMENT_METHOD,
                        **calls.trial_params(order.product, order.now),
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
                raise calls.refuse(
                    product, f"its Stripe Price {product.stripe_price_id} is not a one-time amount"
                )
            return amount, str(currency)
        if not product.price or not product.currency:
            raise calls.refuse(product, "give it a stripe_price_id, or a price and a currency")
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
            None
            if decided.status is ChangeStatus.CANCELED
            else calls.subscription_price(new_product)
        )
        _, _, gateway = stripe_settings.connect(ctx, held.app.id)
        reference = _reference(held)
        view = stripe_sync.read_subscription(gateway, reference)
        if decided.status is ChangeStatus.CANCELED:
            _release_schedule(gateway, reference, view)
            obj = gateway.retrieve_subscription(reference)
        elif decided.billing_mode is BillingMode.IMMEDIATE:
            if new_price is None or view.item_id is None:
                raise InvariantViolation(
                    f"{reference}: an immediate change needs the new price and the item"
                )
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
            if new_price is None:
                raise InvariantViolation(f"{reference}: a scheduled change needs the new price")
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
        if new_product.recurring_interval is None or view.price_id is None:
            raise InvariantViolation(f"{new_product.id}: a downgrade is between recurring prices")
        schedule_id = view.schedule_id
        if schedule_id is None:
            schedule = gateway.create_schedule(
                view.id, idempotency_key=calls.idempotency_key(held.app.id, "schedule")
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
        customer = calls.stripe_customer(ctx, gateway, app, held.customer)
        reference = _reference(held)
        metadata = calls.metadata_of(
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
            session = gateway.create_checkout_session(
                params, idempotency_key=calls.idempotency_key(app.id, "setup")
            )
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
            idempotency_key=calls.idempotency_key(app.id, "setup_intent"),
        )
        sheet = PaymentSheet(
            customer,
            calls.ephemeral_secret(gateway, customer),
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
    applied = calls.apply_subscription(ctx, held.app.id, held.customer.id, obj)
    source = applied.source
    if source is None:
        raise RevenipeError(
            ErrorCode.PROVIDER_ERROR, f"Stripe's answer could not be applied: {applied.detail}"
        )
    return access.subscription_of(source)
