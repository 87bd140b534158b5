"""The built-in sandbox provider: purchases with no payment network, and test clocks.

A sandbox app sells through it. A hosted checkout is a page on this server
(`/v1/sandbox/checkout/{id}`) whose pay button completes the purchase; a payment sheet
gets sandbox secrets that `confirm_intent` accepts; trials start directly or after a
setup. Its subscriptions renew by themselves at each period end, as a card that never
fails would (`engine.subscriptions.advance`), lazily: nothing runs on a schedule.

Its test clock moves one app's time forward (as Stripe's test clocks do), so renewals,
trial ends and expiry happen in seconds. Time only moves forward.

Checkout ids and client secrets are unguessable (128 and 192 random bits): knowing
one is what allows completing that purchase, as with Stripe's own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.subscriptions import CancelMode, Subscription
from revenipe.services import access
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.purchases import (
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
from revenipe.storage import repository as repo

CHECKOUT_LIFETIME = timedelta(hours=24)
MAX_ADVANCE_SECONDS = 10 * 366 * 86_400
CHECKOUT_PATH = "/v1/sandbox/checkout/"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _NewAttempt:
    id: str
    client_secret: str | None


def _open_attempt(
    conn: Connection,
    customer: repo.CustomerRow,
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
    repo.insert_purchase_attempt(
        conn,
        repo.PurchaseAttemptRow(
            id=attempt_id,
            app_id=customer.app_id,
            customer_id=customer.id,
            provider=access.SANDBOX,
            product_id=product_id,
            kind=kind,
            method=method,
            status="open",
            client_secret_hash=_hash(client_secret) if client_secret else None,
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


def _refuse_second_subscription(
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


class SandboxProvider:
    """The purchase endpoints for a sandbox app: everything happens here and now."""

    name = access.SANDBOX

    def start(self, ctx: ServiceContext, order: Order) -> StartedPurchase:
        request = order.request
        product = order.product
        started = StartedPurchase(
            purchase_method=request.purchase_method,
            product_id=product.id,
            product_type=product.type.value,
        )
        kind = "subscription" if order.recurring else "payment"
        with ctx.db.write() as conn:
            app = ctx.require_app(conn, order.app.id)
            now = ctx.now_for(app)
            customer = locked_customer(
                ctx, conn, app, CustomerRef(customer_id=order.customer.id), create=False, now=now
            )
            if order.recurring:
                _refuse_second_subscription(conn, order.catalog, customer.id, product)
            if order.with_trial and request.trial_payment_method_behavior == "direct":
                sub = lifecycle.start(
                    plan_of(product), now, trial=product.trial, payment_method_attached=False
                )
                source = access.open_subscription(
                    conn,
                    order.catalog,
                    customer,
                    sub,
                    now,
                    now,
                    kind="subscription",
                    provider=access.SANDBOX,
                )
                direct = DirectSubscription(source.id, sub.status.value, sub.trial_end)
                return replace(started, subscription=direct)
            details = dict(request.extra_params) if request.extra_params else None
            reserved = new_id("src") if order.recurring else None
            if request.purchase_method == "hosted_checkout":
                attempt = _open_attempt(
                    conn,
                    customer,
                    now,
                    prefix="cs",
                    kind=kind,
                    method="hosted_checkout",
                    product_id=product.id,
                    source_id=reserved,
                    trial=order.with_trial,
                    success_url=request.success_url,
                    cancel_url=request.cancel_url,
                    details=details,
                )
                url = _checkout_url(order.public_base_url, attempt.id)
                return replace(started, checkout=CheckoutSession(attempt.id, url))
            if order.with_trial:
                # The trial needs a payment method on file, not a payment.
                attempt = _open_attempt(
                    conn,
                    customer,
                    now,
                    prefix="seti",
                    kind=kind,
                    method="setup_intent",
                    product_id=product.id,
                    source_id=reserved,
                    trial=True,
                    details=details,
                    with_secret=True,
                )
                assert attempt.client_secret is not None
                if request.trial_payment_method_behavior == "setup_intent":
                    setup = PaymentSetup(
                        customer.id, _ephemeral_key(), attempt.id, attempt.client_secret
                    )
                    return replace(started, setup=setup)
                sheet = PaymentSheet(
                    customer.id,
                    _ephemeral_key(),
                    subscription_id=reserved,
                    setup_intent_client_secret=attempt.client_secret,
                )
                return replace(started, payment_sheet=sheet)
            attempt = _open_attempt(
                conn,
                customer,
                now,
                prefix="pi",
                kind=kind,
                method="payment_sheet",
                product_id=product.id,
                source_id=reserved,
                details=details,
                with_secret=True,
            )
            sheet = PaymentSheet(
                customer.id,
                _ephemeral_key(),
                payment_intent_client_secret=attempt.client_secret,
                subscription_id=reserved,
            )
            return replace(started, payment_sheet=sheet)

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
        source = repo.get_source(conn, held.customer.id, held.source.id)
        assert source is not None, "access sources are never deleted"
        catalog = ctx.catalog(conn, app)
        sub = rule(access.subscription_of(source), now)
        access.update_subscription(
            conn, catalog, source, sub, now, product_changes=product_changes()
        )
        return sub


# --- completing what was started ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckoutView:
    """What the sandbox checkout page shows."""

    session_id: str
    app_name: str
    kind: str
    """payment, subscription or setup."""
    status: str
    product_name: str
    price: int | None
    currency: str | None
    interval: str | None
    trial: str | None
    """The trial's length (ISO-8601), when the purchase starts one."""
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Completion:
    session_id: str
    status: str
    """complete, canceled, or failed (a declined sandbox payment)."""
    access_source_id: str | None
    redirect_url: str | None
    """Where the customer goes next (the success or cancel URL given at the start)."""


def checkout_view(ctx: ServiceContext, session_id: Any) -> CheckoutView:
    with ctx.db.read() as conn:
        attempt = _attempt(conn, session_id, prefix="cs_sbx_")
        app = ctx.require_app(conn, attempt.app_id)
        catalog = ctx.catalog(conn, app)
        status = attempt.status
        if status == "open" and ctx.now_for(app) >= attempt.expires_at:
            status = "expired"
    product = catalog.products_by_id.get(attempt.product_id or "")
    return CheckoutView(
        session_id=attempt.id,
        app_name=app.name,
        kind=attempt.kind,
        status=status,
        product_name=product.name if product else str(attempt.product_id),
        price=product.price if product else None,
        currency=product.currency if product else None,
        interval=product.recurring_interval.value
        if product and product.recurring_interval
        else None,
        trial=product.trial.isoformat() if product and product.trial and attempt.trial else None,
        expires_at=attempt.expires_at,
    )


def _attempt(conn: Connection, attempt_id: Any, *, prefix: str) -> repo.PurchaseAttemptRow:
    found = None
    if isinstance(attempt_id, str) and attempt_id.startswith(prefix) and len(attempt_id) <= 64:
        found = repo.get_purchase_attempt(conn, attempt_id)
    if found is None or found.provider != access.SANDBOX:
        raise RevenipeError(
            ErrorCode.CHECKOUT_NOT_FOUND, "no sandbox checkout or intent with that id"
        )
    return found


def complete_checkout(ctx: ServiceContext, session_id: Any, *, pay: bool) -> Completion:
    """The checkout page's pay (`pay=True`) or cancel button. Paying twice is paying once."""
    return _finish(ctx, session_id, "cs_sbx_", None, succeed=pay)


def confirm_intent(
    ctx: ServiceContext, intent_id: Any, client_secret: Any, *, decline: bool = False
) -> Completion:
    """What a payment sheet does with the secrets: confirm a sandbox payment or setup
    intent. `decline` simulates a refused card: the purchase fails, nothing is granted."""
    prefix = (
        "pi_sbx_" if isinstance(intent_id, str) and intent_id.startswith("pi_") else "seti_sbx_"
    )
    if not isinstance(client_secret, str) or len(client_secret) > 200:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            "client_secret must be the intent's secret",
            field="client_secret",
        )
    return _finish(ctx, intent_id, prefix, client_secret, succeed=not decline, failed="failed")


def _finish(
    ctx: ServiceContext,
    attempt_id: Any,
    prefix: str,
    client_secret: str | None,
    *,
    succeed: bool,
    failed: str = "canceled",
) -> Completion:
    with ctx.db.read() as conn:
        attempt = _attempt(conn, attempt_id, prefix=prefix)
    if client_secret is not None and not (
        attempt.client_secret_hash
        and hmac.compare_digest(attempt.client_secret_hash, _hash(client_secret))
    ):
        raise RevenipeError(
            ErrorCode.CHECKOUT_NOT_FOUND, "no sandbox checkout or intent with that id"
        )
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, attempt.app_id)
        now = ctx.now_for(app)
        customer = locked_customer(
            ctx, conn, app, CustomerRef(customer_id=attempt.customer_id), create=False, now=now
        )
        # Re-read under the customer's lock: a second click may have finished it.
        current = repo.get_purchase_attempt(conn, attempt.id)
        assert current is not None
        if current.status != "open":
            if current.status == "complete" and succeed:
                return _completion(current, "complete")
            raise RevenipeError(
                ErrorCode.CHECKOUT_CLOSED, f"this checkout is {current.status} already"
            )
        if now >= current.expires_at:
            repo.finish_purchase_attempt(conn, current.id, "expired", now, None)
            raise RevenipeError(ErrorCode.CHECKOUT_CLOSED, "this checkout has expired")
        if not succeed:
            repo.finish_purchase_attempt(conn, current.id, failed, now, None)
            return _completion(current, failed)
        catalog = ctx.catalog(conn, app)
        source_id = _fulfil(conn, catalog, customer, current, now)
        repo.finish_purchase_attempt(conn, current.id, "complete", now, source_id)
        return _completion(current, "complete", source_id)


def _completion(
    attempt: repo.PurchaseAttemptRow, status: str, source_id: str | None = None
) -> Completion:
    url = attempt.success_url if status == "complete" else attempt.cancel_url
    if url is not None:
        url = url.replace("{CHECKOUT_SESSION_ID}", attempt.id)
    return Completion(attempt.id, status, source_id or attempt.source_id, url)


def _fulfil(
    conn: Connection,
    catalog: Catalog,
    customer: repo.CustomerRow,
    attempt: repo.PurchaseAttemptRow,
    now: datetime,
) -> str:
    """Grant what the attempt bought (or attach its payment method): the source's id."""
    if attempt.kind == "setup":
        source = repo.get_source(conn, customer.id, attempt.source_id or "")
        if source is None or not access.is_subscription(source):
            raise RevenipeError(ErrorCode.ACCESS_SOURCE_NOT_FOUND, "the subscription is gone")
        sub = lifecycle.attach_payment_method(access.subscription_of(source))
        access.update_subscription(conn, catalog, source, sub, now)
        return source.id
    product = catalog.products_by_id.get(attempt.product_id or "")
    if product is None or not product.purchasable:
        raise RevenipeError(
            ErrorCode.PRODUCT_NOT_PURCHASABLE,
            f"product {attempt.product_id!r} can no longer be bought",
        )
    if attempt.kind == "payment":
        source = access.open_purchase(
            conn,
            catalog,
            customer,
            product,
            now,
            now,
            provider=access.SANDBOX,
            provider_ref=attempt.id,
        )
        return source.id
    _refuse_second_subscription(conn, catalog, customer.id, product)
    sub = lifecycle.start(
        plan_of(product),
        now,
        trial=product.trial if attempt.trial else None,
        payment_method_attached=True,
    )
    source = access.open_subscription(
        conn,
        catalog,
        customer,
        sub,
        now,
        now,
        kind="subscription",
        provider=access.SANDBOX,
        provider_ref=attempt.id,
        source_id=attempt.source_id,
    )
    return source.id


# --- the test clock ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockState:
    app_id: str
    now: datetime
    clock_offset_seconds: int


def _sandbox_app(ctx: ServiceContext, conn: Connection, app_id: str) -> repo.AppRow:
    app = ctx.require_app(conn, app_id)
    if not app.sandbox:
        raise RevenipeError(
            ErrorCode.SANDBOX_ONLY,
            "only sandbox apps have a test clock (create one with `revenipe apps create "
            "--sandbox`)",
        )
    return app


def clock(ctx: ServiceContext, app_id: str) -> ClockState:
    with ctx.db.read() as conn:
        app = _sandbox_app(ctx, conn, app_id)
        return ClockState(app.id, ctx.now_for(app), app.clock_offset_seconds)


def advance_clock(ctx: ServiceContext, app_id: str, seconds: Any) -> ClockState:
    """Move a sandbox app's time forward by `seconds`; what falls due happens lazily."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not 0 < seconds <= MAX_ADVANCE_SECONDS
    ):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"advance by a whole number of seconds from 1 to {MAX_ADVANCE_SECONDS} "
            "(10 years) at a time; time only moves forward",
            field="seconds",
        )
    with ctx.db.write() as conn:
        _sandbox_app(ctx, conn, app_id)
        repo.advance_app_clock(conn, app_id, seconds)
        app = ctx.require_app(conn, app_id)
        return ClockState(app.id, ctx.now_for(app), app.clock_offset_seconds)
