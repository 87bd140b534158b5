"""Stripe's state of a subscription or a payment, applied to access sources.

Whatever told us something changed (a webhook, in any order and any number of times,
or the answer to our own call), we read the object as it stands now and bring its
access source to that state through `services.access`, in the caller's write
transaction after the customer's lock. Applying one state twice changes nothing.

Every instant comes from Stripe, never from when we heard of it: a subscription's
start, periods and end; a plan change's instant (from our `revenipe_plan_changes`
metadata, or Stripe's schedule); a refund's or a lost dispute's. So the ledger is the
same whether events come in order, late, shuffled or twice.

- Subscriptions are keyed by the Stripe subscription id (`provider_ref`). Statuses:
  trialing, active, past_due give access through the current period; canceled ends it
  when Stripe ended it; unpaid ends it at the unpaid period's start; paused at the end
  of the period it paused after; incomplete gives none yet; incomplete_expired never
  gave any. The plan history replays phase by phase, each phase's grants ending at the
  next change; `provider_state_at` on the source is the instant of the last plan change
  applied (its start before any), so each change applies once.
- One-time payments are keyed by the payment intent id: paid opens the purchase at the
  charge; fully refunded, or a lost dispute, revokes what is left at that instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
from revenipe.engine.errors import InvariantViolation
from revenipe.engine.periods import Interval
from revenipe.engine.sources import Provider
from revenipe.engine.subscriptions import (
    BillingMode,
    ChangeStatus,
    PendingChange,
    ProductChange,
    Subscription,
    SubscriptionStatus,
    classify_change,
)
from revenipe.providers import stripe_objects as so
from revenipe.providers.stripe_gateway import StripeGateway
from revenipe.services import access
from revenipe.services.purchases.vocabulary import plan_of
from revenipe.storage import apps as app_store
from revenipe.storage import customers as customer_store
from revenipe.storage import sources as source_store

TAKEN_BACK = ("refunded", "disputed")
"""Statuses of sources whose access was revoked: final, whatever Stripe says later."""
_SOURCE_ID = re.compile(r"^src_[0-9a-f]{14,40}$")


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: str
    """applied (the source is in Stripe's state now) or ignored (nothing of ours)."""
    detail: str | None = None
    source: source_store.SourceRow | None = None


def ignored(detail: str) -> Applied:
    return Applied("ignored", detail)


def customer_for(
    conn: Connection, app: app_store.AppRow, metadata: dict[str, str], stripe_customer: str | None
) -> customer_store.CustomerRow | None:
    """Our customer an object belongs to: by our metadata, else by the Stripe customer
    it names. None when it is not one of this app's (another app's metadata, a customer
    we never linked): such an object is never applied here."""
    named_app = metadata.get(so.APP_KEY)
    if named_app is not None and named_app != app.id:
        return None
    customer_id = metadata.get(so.CUSTOMER_KEY)
    if customer_id is None and stripe_customer is not None:
        customer_id = customer_store.find_customer_id_by_provider_id(
            conn, app.id, Provider.STRIPE, stripe_customer
        )
    if customer_id is None:
        return None
    return customer_store.find_customer(conn, app.id, customer_id=customer_id)


def _reserved_source_id(conn: Connection, metadata: dict[str, str]) -> str | None:
    # The id we answered when the purchase started, unless it is malformed or taken.
    wanted = metadata.get(so.SOURCE_KEY)
    if wanted is None or not _SOURCE_ID.match(wanted) or source_store.has_source_id(conn, wanted):
        return None
    return wanted


def _owned_source(
    conn: Connection, customer: customer_store.CustomerRow, provider_ref: str
) -> tuple[source_store.SourceRow | None, Applied | None]:
    source = source_store.find_source_by_ref(conn, customer.app_id, Provider.STRIPE, provider_ref)
    if source is not None and source.customer_id != customer.id:
        return None, ignored(f"{provider_ref} gives access to another customer")
    if source is not None and source.status in TAKEN_BACK:
        return None, ignored(f"{provider_ref} was {source.status}: its access is final")
    return source, None


# --- subscriptions --------------------------------------------------------------------


def product_of_price(catalog: Catalog, price_id: str | None) -> Product | None:
    if price_id is None:
        return None
    for product in catalog.products:
        if product.stripe_price_id == price_id and product.recurring_interval is not None:
            return product
    return None


def _product_of(catalog: Catalog, view: so.SubscriptionView) -> Product | None:
    product = product_of_price(catalog, view.price_id)
    if product is None:
        # Sold with price_data (no Stripe Price of ours): our metadata names it.
        product = catalog.products_by_id.get(view.metadata.get(so.PRODUCT_KEY, ""))
    if product is None or product.recurring_interval is None or not product.purchasable:
        return None
    return product


def _status(
    view: so.SubscriptionView, now: datetime
) -> tuple[SubscriptionStatus, datetime | None] | None:
    """The engine's status and when access ended, or None while it gives none yet."""
    status = view.status
    if status == "trialing":
        return SubscriptionStatus.TRIALING, None
    if status == "active":
        return SubscriptionStatus.ACTIVE, None
    if status == "past_due":
        return SubscriptionStatus.PAST_DUE, None
    if status == "canceled":
        return SubscriptionStatus.CANCELED, view.ended_at or view.canceled_at or now
    if status == "unpaid":
        return SubscriptionStatus.CANCELED, view.period_start
    if status == "paused":
        return SubscriptionStatus.CANCELED, min(view.period_end, now)
    if status == "incomplete_expired":
        return SubscriptionStatus.CANCELED, view.start_date
    return None


def _pending(catalog: Catalog, view: so.SubscriptionView, product: Product) -> PendingChange | None:
    phase = view.next_phase
    new = product_of_price(catalog, phase.price_id) if phase else None
    if phase is None or new is None or new.id == product.id:
        return None
    if new.recurring_interval is None:
        raise InvariantViolation(f"product {new.id}, a subscription's next phase, is not recurring")
    change_type, _ = classify_change(plan_of(product), plan_of(new))
    return PendingChange(
        change_id=phase.schedule_id,
        type=change_type,
        billing_mode=BillingMode.PERIOD_END,
        status=ChangeStatus.PENDING,
        from_product_id=product.id,
        to_product_id=new.id,
        to_interval=new.recurring_interval,
        effective_at=phase.start,
    )


def subscription_state(
    catalog: Catalog, view: so.SubscriptionView, now: datetime
) -> Subscription | None:
    """The engine's view of a Stripe subscription, or None when it gives no access
    (yet: incomplete) or is no catalog product's."""
    product = _product_of(catalog, view)
    status = _status(view, now)
    if product is None or status is None:
        return None
    if product.recurring_interval is None:
        raise InvariantViolation(f"product {product.id} of a Stripe subscription is not recurring")
    engine_status, ended_at = status
    live = ended_at is None
    return Subscription(
        product_id=product.id,
        interval=product.recurring_interval,
        status=engine_status,
        anchor=view.anchor,
        period_start=view.period_start,
        period_end=view.period_end,
        trial_end=view.trial_end,
        cancel_at_period_end=view.cancel_at_period_end and live,
        canceled_at=view.canceled_at,
        ended_at=ended_at,
        payment_method_attached=view.payment_method_attached,
        pending_change=_pending(catalog, view, product) if live else None,
    )


def _known_changes(catalog: Catalog, view: so.SubscriptionView) -> list[so.PlanChange]:
    def recurring(product_id: str) -> bool:
        product = catalog.products_by_id.get(product_id)
        return product is not None and product.recurring_interval is not None

    return [
        c for c in view.plan_changes if recurring(c.from_product_id) and recurring(c.to_product_id)
    ]


def _interval(catalog: Catalog, product_id: str) -> Interval:
    interval = catalog.products_by_id[product_id].recurring_interval
    if interval is None:
        raise InvariantViolation(f"product {product_id} of a plan change is not recurring")
    return interval


def _anchors(
    catalog: Catalog, view: so.SubscriptionView, products: list[str], changes: list[so.PlanChange]
) -> list[datetime]:
    """Each phase's billing anchor. Stripe moves the anchor to the instant of a change of
    interval (but not during a trial), so phases since the last one bill on Stripe's
    anchor and earlier ones on the anchor they began with."""
    anchors = [view.trial_end or view.start_date]
    last_move = 0
    for index, change in enumerate(changes, start=1):
        moved = _interval(catalog, products[index]) is not _interval(catalog, products[index - 1])
        in_trial = view.trial_end is not None and change.at < view.trial_end
        anchors.append(change.at if moved and not in_trial else anchors[-1])
        if moved and not in_trial:
            last_move = index
    return [a if i < last_move else view.anchor for i, a in enumerate(anchors)]


def sync_subscription(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    view: so.SubscriptionView,
    now: datetime,
) -> Applied:
    """Bring the customer's source of this Stripe subscription to its state in `view`."""
    target = subscription_state(catalog, view, now)
    if target is None:
        if _product_of(catalog, view) is None:
            return ignored(f"{view.id}: its price is no catalog product's stripe_price_id")
        return ignored(f"{view.id} is {view.status}: no access yet")
    source, refusal = _owned_source(conn, customer, view.id)
    if refusal is not None:
        return refusal
    changes = _known_changes(catalog, view)
    products = [changes[0].from_product_id if changes else target.product_id]
    products += [c.to_product_id for c in changes]
    if source is None and target.access_ends_at <= view.start_date:
        return ignored(f"{view.id} ended before it gave any access")
    known = access.KnownSubscription(
        source,
        Provider.STRIPE,
        view.id,
        source_id=_reserved_source_id(conn, view.metadata) if source is None else None,
    )
    told = access.ToldHistory(
        target,
        [ProductChange(c.at, c.from_product_id, c.to_product_id) for c in changes],
        _anchors(catalog, view, products, changes),
        view.start_date,
    )
    source = access.follow_history(conn, catalog, customer, known, told, now)
    return Applied("applied", f"{view.id}: {view.status}", source)


def read_subscription(gateway: StripeGateway, subscription_id: str) -> so.SubscriptionView:
    return so.read_subscription(gateway.retrieve_subscription(subscription_id))


# --- one-time payments -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentState:
    payment: so.PaymentView
    taken_back_at: datetime | None = None
    taken_back_as: str | None = None
    """refunded or disputed."""


def read_payment(gateway: StripeGateway, intent_id: str) -> PaymentState:
    """A payment intent as it stands, and when (if ever) its money went back."""
    payment = so.read_payment_intent(gateway.retrieve_payment_intent(intent_id))
    candidates: list[tuple[datetime, str]] = []
    if payment.fully_refunded:
        refunded = so.refunded_at(gateway.list_refunds(payment.id))
        if refunded is not None:
            candidates.append((refunded, "refunded"))
    if payment.disputed:
        lost = so.dispute_lost_at(gateway.list_disputes(payment.id))
        if lost is not None:
            candidates.append((lost, "disputed"))
    if not candidates:
        return PaymentState(payment)
    at, reason = min(candidates)
    return PaymentState(payment, at, reason)


def sync_payment(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    state: PaymentState,
    now: datetime,
) -> Applied:
    """Open the purchase a payment intent paid for, or revoke it once taken back."""
    payment = state.payment
    source, refusal = _owned_source(conn, customer, payment.id)
    if refusal is not None:
        return refusal
    if source is None:
        if payment.status != "succeeded":
            return ignored(f"{payment.id} is {payment.status}: not paid")
        product = catalog.products_by_id.get(payment.metadata.get(so.PRODUCT_KEY, ""))
        if product is None or product.recurring_interval is not None or not product.purchasable:
            return ignored(f"{payment.id} pays for no one-time product of the catalog")
        paid_at = min(payment.paid_at, now)
        as_of = None
        if state.taken_back_at is not None:
            as_of = max(paid_at, min(state.taken_back_at, now))
        source = access.open_purchase(
            conn,
            catalog,
            customer,
            product,
            paid_at,
            now,
            provider=Provider.STRIPE,
            provider_ref=payment.id,
            as_of=as_of,
        )
    if state.taken_back_at is not None and state.taken_back_as is not None:
        source = access.revoke_source(
            conn,
            source,
            now,
            status=state.taken_back_as,
            at=max(state.taken_back_at, source.started_at),
        )
        return Applied("applied", f"{payment.id}: {state.taken_back_as}", source)
    return Applied("applied", f"{payment.id}: paid", source)
