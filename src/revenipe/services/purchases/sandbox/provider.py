"""The sandbox as a purchase provider: purchases, cancels, plan changes and payment
methods with no payment network.

A hosted checkout is a page on this server (`/v1/sandbox/checkout/{id}`) whose pay button
completes the purchase (`checkout`); a payment sheet gets sandbox secrets that
`checkout.confirm_intent` accepts; trials start directly or after a setup. Its
subscriptions renew by themselves at each period end, as a card that never fails would
(`engine.subscriptions.advance`), lazily: nothing runs on a schedule.

Checkout ids and client secrets are unguessable (128 and 192 random bits): knowing
one is what allows completing that purchase, as with Stripe's own.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.engine.subscriptions import CancelMode, Subscription
from revenipe.services import access
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.customers import CustomerRef, locked_customer
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
    live_subscription,
    plan_change_outcome,
    plan_of,
)
from revenipe.storage import customers as customer_store
from revenipe.storage import purchases as purchase_store
from revenipe.storage import sources as source_store

CHECKOUT_LIFETIME = timedelta(hours=24)
CHECKOUT_PATH = "/v1/sandbox/checkout/"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _NewAttempt:
    id: str
    client_secret: str | None


def _open_attempt(
    conn: Connection,
    customer: customer_store.CustomerRow,
    now: datetime,
    *,
    prefix: str,
    kind: str,
    method: str,
    product_id: str | None,
    source_id: str | None,
    trial: bool = False,
    success_url: str | None = None,
    cancel_url: str | None = None,
    details: dict[str, Any] | None = None,
    with_secret: bool = False,
) -> _NewAttempt:
    attempt_id = f"{prefix}_sbx_{secrets.token_hex(16)}"
    client_secret = f"{attempt_id}_secret_{secrets.token_urlsafe(24)}" if with_secret else None
    purchase_store.insert_purchase_attempt(
        conn,
        purchase_store.PurchaseAttemptRow(
            id=attempt_id,
            app_id=customer.app_id,
            customer_id=customer.id,
            provider=Provider.SANDBOX,
            product_id=product_id,
            kind=kind,
            method=method,
            status="open",
            client_secret_hash=hash_secret(client_secret) if client_secret else None,
            source_id=source_id,
            success_url=success_url,
            cancel_url=cancel_url,
            trial=trial,
            details=json.dumps(details, sort_keys=True) if details else None,
            created_at=now,
            expires_at=now + CHECKOUT_LIFETIME,
        ),
    )
    return _NewAttempt(attempt_id, client_secret)


def _ephemeral_key() -> str:
    # A payment sheet wants one; the sandbox has no customer API for it to unlock.
    return f"ek_sbx_{secrets.token_urlsafe(24)}"


def refuse_second_subscription(
    conn: Connection, catalog: Catalog, customer_id: str, product: Product
) -> None:
    existing = live_subscription(conn, catalog, customer_id, product)
    if existing is not None:
        raise RevenipeError(
            ErrorCode.SUBSCRIPTION_EXISTS,
            f"the customer already has the live subscription {existing.id}; change its "
            "plan instead",
            field="product_id",
        )


def _started(order: Order) -> StartedPurchase:
    """The answer every start gives, before what its purchase method adds."""
    return StartedPurchase(
        purchase_method=order.request.purchase_method,
        product_id=order.product.id,
        product_type=order.product.type.value,
    )


def _start_trial_directly(
    conn: Connection, order: Order, customer: customer_store.CustomerRow, now: datetime
) -> StartedPurchase:
    """A trial with `trial_payment_method_behavior` "direct": the subscription opens now,
    trialing, with no payment method on file."""
    sub = lifecycle.start(
        plan_of(order.product), now, trial=order.product.trial, payment_method_attached=False
    )
    source = access.open_subscription(
        conn,
        order.catalog,
        customer,
        sub,
        now,
        now,
        kind="subscription",
        provider=Provider.SANDBOX,
    )
    direct = DirectSubscription(source.id, sub.status.value, sub.trial_end)
    return replace(_started(order), subscription=direct)


@dataclass(frozen=True, slots=True)
class _Opening:
    """An order about to open its purchase attempt, and what every attempt records."""

    conn: Connection
    order: Order
    customer: customer_store.CustomerRow
    now: datetime
    reserved: str | None
    """The id reserved for the subscription the attempt will open (None for a payment)."""

    def attempt(
        self,
        prefix: str,
        method: str,
        *,
        trial: bool = False,
        success_url: str | None = None,
        cancel_url: str | None = None,
        with_secret: bool = False,
    ) -> _NewAttempt:
        """Record the open attempt (`_open_attempt`) of this order's product."""
        request = self.order.request
        return _open_attempt(
            self.conn,
            self.customer,
            self.now,
            prefix=prefix,
            kind="subscription" if self.order.recurring else "payment",
            method=method,
            product_id=self.order.product.id,
            source_id=self.reserved,
            trial=trial,
            success_url=success_url,
            cancel_url=cancel_url,
            details=dict(request.extra_params) if request.extra_params else None,
            with_secret=with_secret,
        )


def _start_hosted_checkout(opening: _Opening) -> StartedPurchase:
    """A hosted checkout: a page on this server whose pay button completes the purchase."""
    order = opening.order
    attempt = opening.attempt(
        "cs",
        "hosted_checkout",
        trial=order.with_trial,
        success_url=order.request.success_url,
        cancel_url=order.request.cancel_url,
    )
    url = _checkout_url(order.public_base_url, attempt.id)
    return replace(_started(order), checkout=CheckoutSession(attempt.id, url))


def _start_trial_setup(opening: _Opening) -> StartedPurchase:
    """A trial in the app: it needs a payment method on file, not a payment, so a setup
    intent's secret goes back, alone ("setup_intent") or in a payment sheet."""
    attempt = opening.attempt("seti", "setup_intent", trial=True, with_secret=True)
    if attempt.client_secret is None:
        raise InvariantViolation(f"attempt {attempt.id} was opened with a secret, yet has none")
    customer_id = opening.customer.id
    if opening.order.request.trial_payment_method_behavior == "setup_intent":
        setup = PaymentSetup(customer_id, _ephemeral_key(), attempt.id, attempt.client_secret)
        return replace(_started(opening.order), setup=setup)
    sheet = PaymentSheet(
        customer_id,
        _ephemeral_key(),
        subscription_id=opening.reserved,
        setup_intent_client_secret=attempt.client_secret,
    )
    return replace(_started(opening.order), payment_sheet=sheet)


def _start_payment_sheet(opening: _Opening) -> StartedPurchase:
    """A payment in the app: a payment intent's secret in a payment sheet."""
    attempt = opening.attempt("pi", "payment_sheet", with_secret=True)
    sheet = PaymentSheet(
        opening.customer.id,
        _ephemeral_key(),
        payment_intent_client_secret=attempt.client_secret,
        subscription_id=opening.reserved,
    )
    return replace(_started(opening.order), payment_sheet=sheet)


class SandboxProvider:
    """The purchase endpoints for a sandbox app: everything happens here and now."""

    name = Provider.SANDBOX

    def start(self, ctx: ServiceContext, order: Order) -> StartedPurchase:
        """Start a purchase in one write transaction, under the customer's lock: a trial
        that starts directly opens its subscription now; any other purchase opens an
        attempt that its checkout page or payment sheet completes later."""
        with ctx.db.write() as conn:
            app = ctx.require_app(conn, order.app.id)
            now = ctx.now_for(app)
            customer = locked_customer(
                ctx, conn, app, CustomerRef(customer_id=order.customer.id), create=False, now=now
            )
            if order.recurring:
                refuse_second_subscription(conn, order.catalog, customer.id, order.product)
            if order.with_trial and order.request.trial_payment_method_behavior == "direct":
                return _start_trial_directly(conn, order, customer, now)
            opening = _Opening(
                conn, order, customer, now, new_id("src") if order.recurring else None
            )
            if order.request.purchase_method == "hosted_checkout":
                return _start_hosted_checkout(opening)
            if order.with_trial:
                return _start_trial_setup(opening)
            return _start_payment_sheet(opening)

    def cancel(self, ctx: ServiceContext, held: Held, mode: CancelMode) -> CancelOutcome:
        def cancel(sub: Subscription, now: datetime) -> Subscription:
            return lifecycle.cancel(sub, mode, now)

        return cancel_outcome(_change(ctx, held, cancel))

    def uncancel(self, ctx: ServiceContext, held: Held) -> None:
        _change(ctx, held, lambda sub, _now: lifecycle.uncancel(sub))

    def change_plan(
        self, ctx: ServiceContext, held: Held, new_product: Product
    ) -> PlanChangeOutcome:
        outcomes: list[lifecycle.PlanChangeOutcome] = []

        def change(sub: Subscription, now: datetime) -> Subscription:
            current = held.catalog.products_by_id.get(sub.product_id, held.product)
            outcome = lifecycle.change_plan(
                sub, plan_of(current), plan_of(new_product), now, change_id=new_id("chg")
            )
            outcomes.append(outcome)
            return outcome.subscription

        _change(ctx, held, change, product_changes=lambda: _changes(outcomes))
        return plan_change_outcome(outcomes[-1].change)

    def attach_payment_method(
        self,
        ctx: ServiceContext,
        held: Held,
        mode: str,
        success_url: str | None,
        cancel_url: str | None,
        public_base_url: str,
    ) -> AttachOutcome:
        with ctx.db.write() as conn:
            app = ctx.require_app(conn, held.app.id)
            now = ctx.now_for(app)
            customer = locked_customer(
                ctx, conn, app, CustomerRef(customer_id=held.customer.id), create=False, now=now
            )
            if mode == "hosted_checkout":
                attempt = _open_attempt(
                    conn,
                    customer,
                    now,
                    prefix="cs",
                    kind="setup",
                    method="hosted_checkout",
                    product_id=held.product.id,
                    source_id=held.source.id,
                    success_url=success_url,
                    cancel_url=cancel_url,
                )
                url = _checkout_url(public_base_url, attempt.id)
                return AttachOutcome(mode, checkout=CheckoutSession(attempt.id, url))
            attempt = _open_attempt(
                conn,
                customer,
                now,
                prefix="seti",
                kind="setup",
                method="setup_intent",
                product_id=held.product.id,
                source_id=held.source.id,
                with_secret=True,
            )
            sheet = PaymentSheet(
                customer.id, _ephemeral_key(), setup_intent_client_secret=attempt.client_secret
            )
            return AttachOutcome(mode, payment_sheet=sheet)


def _changes(outcomes: list[lifecycle.PlanChangeOutcome]) -> list[lifecycle.ProductChange]:
    return [o.product_change for o in outcomes if o.product_change is not None]


def _checkout_url(base_url: str, attempt_id: str) -> str:
    return f"{base_url.rstrip('/')}{CHECKOUT_PATH}{attempt_id}"


def _change(
    ctx: ServiceContext,
    held: Held,
    rule: Callable[[Subscription, datetime], Subscription],
    *,
    product_changes: Callable[[], list[lifecycle.ProductChange]] = list,
) -> Subscription:
    """Apply a lifecycle rule to a sandbox subscription, in one transaction, on its
    state as it stands under the customer's lock (caught up first)."""
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, held.app.id)
        now = ctx.now_for(app)
        locked_customer(
            ctx, conn, app, CustomerRef(customer_id=held.customer.id), create=False, now=now
        )
        source = source_store.get_source(conn, held.customer.id, held.source.id)
        if source is None:
            raise InvariantViolation(
                f"access source {held.source.id} vanished: sources are never deleted"
            )
        catalog = ctx.catalog(conn, app)
        sub = rule(access.subscription_of(source), now)
        access.update_subscription(
            conn, catalog, source, sub, now, product_changes=product_changes()
        )
        return sub
