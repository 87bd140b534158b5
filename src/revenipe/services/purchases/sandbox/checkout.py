"""The sandbox's checkout page and payment intents: what the page shows, and the
purchase completed (or canceled) when the customer presses a button or confirms.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.catalog import Catalog
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.services import access
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.purchases.sandbox.provider import hash_secret, refuse_second_subscription
from revenipe.services.purchases.vocabulary import (
    plan_of,
)
from revenipe.storage import customers as customer_store
from revenipe.storage import purchases as purchase_store
from revenipe.storage import sources as source_store

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


def _attempt(
    conn: Connection, attempt_id: Any, *, prefix: str
) -> purchase_store.PurchaseAttemptRow:
    found = None
    if isinstance(attempt_id, str) and attempt_id.startswith(prefix) and len(attempt_id) <= 64:
        found = purchase_store.get_purchase_attempt(conn, attempt_id)
    if found is None or found.provider != Provider.SANDBOX:
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
        and hmac.compare_digest(attempt.client_secret_hash, hash_secret(client_secret))
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
        current = purchase_store.get_purchase_attempt(conn, attempt.id)
        if current is None:
            raise InvariantViolation(
                f"purchase attempt {attempt.id} vanished: attempts are never deleted"
            )
        if current.status != "open":
            if current.status == "complete" and succeed:
                return _completion(current, "complete")
            raise RevenipeError(
                ErrorCode.CHECKOUT_CLOSED, f"this checkout is {current.status} already"
            )
        if now >= current.expires_at:
            purchase_store.update_purchase_attempt_closed(conn, current.id, "expired", now, None)
            raise RevenipeError(ErrorCode.CHECKOUT_CLOSED, "this checkout has expired")
        if not succeed:
            purchase_store.update_purchase_attempt_closed(conn, current.id, failed, now, None)
            return _completion(current, failed)
        catalog = ctx.catalog(conn, app)
        source_id = _fulfil(conn, catalog, customer, current, now)
        purchase_store.update_purchase_attempt_closed(conn, current.id, "complete", now, source_id)
        return _completion(current, "complete", source_id)


def _completion(
    attempt: purchase_store.PurchaseAttemptRow, status: str, source_id: str | None = None
) -> Completion:
    url = attempt.success_url if status == "complete" else attempt.cancel_url
    if url is not None:
        url = url.replace("{CHECKOUT_SESSION_ID}", attempt.id)
    return Completion(attempt.id, status, source_id or attempt.source_id, url)


def _fulfil(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    attempt: purchase_store.PurchaseAttemptRow,
    now: datetime,
) -> str:
    """Grant what the attempt bought (or attach its payment method): the source's id."""
    if attempt.kind == "setup":
        source = source_store.get_source(conn, customer.id, attempt.source_id or "")
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
            provider=Provider.SANDBOX,
            provider_ref=attempt.id,
        )
        return source.id
    refuse_second_subscription(conn, catalog, customer.id, product)
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
        provider=Provider.SANDBOX,
        provider_ref=attempt.id,
        source_id=attempt.source_id,
    )
    return source.id
