"""Stripe's events for one app (`POST /v1/webhooks/stripe/{app_id}`): verified, then
applied exactly once, in any order.

1. The `Stripe-Signature` is verified by the stripe library with the app's webhook
   secret, its timestamp within `TOLERANCE_SECONDS`. A forged or stale signature is
   refused (`webhook_refused`) and nothing is recorded.
2. An event already recorded is a redelivery: answered as a duplicate, applied never
   again. The same signature presented twice (a replay: Stripe signs every attempt
   anew, later) is refused.
3. The object the event is about is read again from Stripe as it stands now (outside
   any transaction): the subscription (with its schedule), the payment intent with its
   latest charge (and its refunds or disputes), the checkout session, the setup intent.
   What an event carried is never applied, so its order does not matter.
4. In one write transaction, under the customer's lock: the event is recorded, and the
   object's state applied (`services.stripe_sync`). Both commit together, or neither.

An object that is not this app's (another app's metadata, a customer never linked) or
an event type of no use is recorded as `ignored` and answered 2xx, so Stripe stops
sending it. A failure to read Stripe is answered 502: Stripe retries later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.providers import stripe_objects as so
from revenipe.providers.stripe_gateway import StripeGateway, signature_timestamp, verify_webhook
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.purchases.stripe import settings as stripe_settings
from revenipe.services.purchases.stripe import sync as stripe_sync
from revenipe.services.purchases.webhooks import Received
from revenipe.storage import apps as app_store
from revenipe.storage import webhooks as webhook_store

TOLERANCE_SECONDS = 300
"""Stripe's own default: a signature older than 5 minutes is refused."""
MAX_EVENT_ID = 255


@dataclass(frozen=True, slots=True)
class _Current:
    """What Stripe says now of the object an event was about."""

    metadata: dict[str, str]
    stripe_customer: str | None
    subscription: so.SubscriptionView | None = None
    payment: stripe_sync.PaymentState | None = None


def receive(ctx: ServiceContext, app_id: str, payload: bytes, signature: str | None) -> Received:
    """Verify one delivery and apply its event once (see the module's steps)."""
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        settings = stripe_settings.require(conn, app)
    if settings.webhook_secret is None:
        raise RevenipeError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            "this app has no Stripe webhook secret yet (`revenipe stripe configure "
            "--webhook-secret`, or PUT /v1/providers/stripe)",
        )
    event = verify_webhook(
        payload, signature, settings.webhook_secret, tolerance_seconds=TOLERANCE_SECONDS
    )
    signed_at = signature_timestamp(signature or "")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
        raise RevenipeError(ErrorCode.WEBHOOK_REFUSED, "the event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise RevenipeError(ErrorCode.WEBHOOK_REFUSED, "the event has no type")
    event_type = event_type[:128]
    with ctx.db.read() as conn:
        seen = webhook_store.get_webhook_event(conn, app.id, Provider.STRIPE, event_id)
    if seen is not None:
        return _redelivered(ctx, seen, signed_at)
    current = _read_current(ctx.stripe.gateway(settings.secret_key), app, event)
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app.id)
        now = ctx.now_for(app)
        customer = None
        if current is not None:
            found = stripe_sync.customer_for(conn, app, current.metadata, current.stripe_customer)
            if found is not None:
                customer = locked_customer(
                    ctx, conn, app, CustomerRef(customer_id=found.id), create=False, now=now
                )
        detail: dict[str, Any] = {"signed_at": signed_at}
        if not webhook_store.insert_webhook_event_if_new(
            conn, app.id, Provider.STRIPE, event_id, event_type, "received", json.dumps(detail), now
        ):
            return Received(event_id, event_type, "duplicate")
        if current is None:
            applied = stripe_sync.ignored(f"{event_type}: nothing to apply")
        elif customer is None:
            applied = stripe_sync.ignored("not about a customer of this app")
        elif current.subscription is not None:
            catalog = ctx.catalog(conn, app)
            applied = stripe_sync.sync_subscription(
                conn, catalog, customer, current.subscription, now
            )
        else:
            if current.payment is None:
                raise InvariantViolation(
                    f"{event_type}: read as neither a subscription nor a payment"
                )
            catalog = ctx.catalog(conn, app)
            applied = stripe_sync.sync_payment(conn, catalog, customer, current.payment, now)
        detail["note"] = applied.detail
        webhook_store.update_webhook_outcome(
            conn, app.id, Provider.STRIPE, event_id, applied.outcome, json.dumps(detail)
        )
        return Received(event_id, event_type, applied.outcome, applied.detail)


def _redelivered(
    ctx: ServiceContext, seen: webhook_store.WebhookEventRow, signed_at: int
) -> Received:
    try:
        detail = json.loads(seen.detail or "{}")
    except ValueError:
        detail = {}
    last = detail.get("signed_at") if isinstance(detail, dict) else None
    if isinstance(last, int) and signed_at <= last:
        raise RevenipeError(
            ErrorCode.WEBHOOK_REFUSED,
            "replayed: this event was delivered with this signature already (Stripe signs "
            "each delivery anew)",
        )
    detail = {**(detail if isinstance(detail, dict) else {}), "signed_at": signed_at}
    with ctx.db.write() as conn:
        webhook_store.update_webhook_outcome(
            conn, seen.app_id, Provider.STRIPE, seen.event_id, seen.outcome, json.dumps(detail)
        )
    return Received(seen.event_id, seen.type, "duplicate", "applied once already")


def _not_ours(metadata: dict[str, str], app: app_store.AppRow) -> bool:
    named = metadata.get(so.APP_KEY)
    return named is not None and named != app.id


def _read_current(
    gateway: StripeGateway, app: app_store.AppRow, event: dict[str, Any]
) -> _Current | None:
    """The object the event is about, read from Stripe now; None when there is none
    (an event type of no use, a checkout not paid, a setup intent not for us)."""
    target = so.event_target(event)
    if target is not None and target.kind == "checkout":
        session = gateway.retrieve_checkout_session(target.id)
        if _not_ours(so.metadata_of(session), app):
            return None
        field = {
            "payment": "payment_intent",
            "subscription": "subscription",
            "setup": "setup_intent",
        }
        kind = {"payment": "payment", "subscription": "subscription", "setup": "setup_intent"}
        mode = str(session.get("mode"))
        found = so.ref(session.get(field.get(mode, "")))
        target = so.Target(kind[mode], found) if found and mode in kind else None
    if target is None:
        return None
    if target.kind == "payment":
        state = stripe_sync.read_payment(gateway, target.id)
        return _Current(state.payment.metadata, state.payment.customer, payment=state)
    if target.kind == "setup_intent":
        return _attach_payment_method(gateway, app, target.id)
    view = stripe_sync.read_subscription(gateway, target.id)
    return _Current(view.metadata, view.customer, subscription=view)


def _attach_payment_method(
    gateway: StripeGateway, app: app_store.AppRow, setup_intent_id: str
) -> _Current | None:
    """A payment method collected for one of our subscriptions becomes its default, so
    its trial converts and its renewals are paid with it. Doing it again is harmless."""
    intent = gateway.retrieve_setup_intent(setup_intent_id)
    metadata = so.metadata_of(intent)
    subscription_id = metadata.get(so.SUBSCRIPTION_KEY)
    payment_method = so.ref(intent.get("payment_method"))
    if (
        intent.get("status") != "succeeded"
        or subscription_id is None
        or payment_method is None
        or metadata.get(so.APP_KEY) != app.id
    ):
        return None
    obj = gateway.update_subscription(subscription_id, {"default_payment_method": payment_method})
    view = so.read_subscription(obj)
    return _Current(view.metadata, view.customer, subscription=view)
