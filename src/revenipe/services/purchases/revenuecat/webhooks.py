"""RevenueCat's events for one app (`POST /v1/webhooks/revenuecat/{app_id}`): authorized,
then applied exactly once, in any order (docs/revenuecat.md, docs/adr/0011).

1. The `Authorization` header must equal, compared in constant time, the value the app
   configured (`revenuecat_settings`). Otherwise nothing is read or recorded.
2. The body is parsed (`providers.revenuecat_events`); a malformed one is refused.
3. In one write transaction, under the customer's lock: the event is recorded
   (`webhook_events`, with its subject and `event_timestamp_ms`), then its subject is
   brought to the state that *all* its recorded events tell, read back in the order
   they happened. A redelivery is answered `duplicate` and applies nothing.

Subjects: a subscription is its `original_transaction_id`, a one-time purchase its
`transaction_id`. A subscription opens with its INITIAL_PURCHASE (its start, first
product and trial); its other events wait (`pending`) until that has arrived. Each
event then carries the subscription's state as of its own timestamp: the latest wins,
and the products the events name give the plan history, each change at the start of
the period that first carried the new product.

An event of a store we do not map, or whose product is no catalog product's store id,
is recorded as `ignored` and answered 2xx, so RevenueCat stops sending it.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
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
from revenipe.providers import revenuecat_events as rce
from revenipe.services import access
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.purchases.revenuecat import settings as revenuecat_settings
from revenipe.services.purchases.vocabulary import plan_of
from revenipe.services.purchases.webhooks import Received
from revenipe.storage import apps as app_store
from revenipe.storage import customers as customer_store
from revenipe.storage import sources as source_store
from revenipe.storage import webhooks as webhook_store

FINAL = ("refunded", "transferred")
"""Statuses of sources whose access was taken back or moved: later events change nothing."""
TRANSFERS = "transfers"
"""The subject every TRANSFER is recorded under (they are about customers, not sources)."""
_SUBSCRIPTION = "subscription:"
_PURCHASE = "purchase:"


@dataclass(frozen=True, slots=True)
class _Outcome:
    outcome: str
    """applied, pending (waiting for an earlier event) or ignored."""
    detail: str


def receive(
    ctx: ServiceContext, app_id: str, payload: bytes, authorization: str | None
) -> Received:
    """Authorize one delivery and apply its event once (see the module's steps)."""
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        settings = revenuecat_settings.require(conn, app)
    if authorization is None or not hmac.compare_digest(
        authorization.encode(), settings.authorization.encode()
    ):
        raise RevenipeError(
            ErrorCode.WEBHOOK_UNAUTHORIZED,
            "the Authorization header is not the value configured for this app's "
            "RevenueCat webhook",
        )
    event = rce.parse(payload)
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app.id)
        now = ctx.now_for(app)
        if webhook_store.get_webhook_event(conn, app.id, Provider.REVENUECAT, event.id) is not None:
            return Received(event.id, event.type, "duplicate", "applied once already")
        catalog = ctx.catalog(conn, app)
        subject, product, why_not = _subject(catalog, event)
        customer = None
        if subject is not None and why_not is None:
            name = event.transferred_to[0] if subject == TRANSFERS else event.app_user_id
            if name is None:
                raise InvariantViolation(f"event {event.id}: its subject names no app user")
            customer = locked_customer(
                ctx, conn, app, CustomerRef.external(name), create=True, now=now
            )
        detail: dict[str, Any] = {"event": rce.to_record(event)}
        if not webhook_store.insert_webhook_event_if_new(
            conn,
            app.id,
            Provider.REVENUECAT,
            event.id,
            event.type[:128],
            "received",
            json.dumps(detail),
            now,
            subject=subject if why_not is None else None,
            occurred_at=event.occurred_at,
        ):
            return Received(event.id, event.type, "duplicate", "applied once already")
        if why_not is not None or subject is None or customer is None:
            result = _Outcome("ignored", why_not or "nothing to apply")
        elif subject == TRANSFERS:
            result = _transfer(ctx, conn, app, event, now)
        elif subject.startswith(_SUBSCRIPTION):
            result = _follow_subscription(ctx, conn, app, catalog, subject, now)
        else:
            if product is None:
                raise InvariantViolation(f"event {event.id}: a purchase of no catalog product")
            result = _follow_purchase(ctx, conn, app, catalog, customer, subject, now)
        detail["note"] = result.detail
        webhook_store.update_webhook_outcome(
            conn, app.id, Provider.REVENUECAT, event.id, result.outcome, json.dumps(detail)
        )
        return Received(event.id, event.type, result.outcome, result.detail)


# --- what an event is about -------------------------------------------------------------


def product_for(
    catalog: Catalog, store: str | None, store_product_id: str | None
) -> Product | None:
    """The catalog product a store's product id names.

    App Store (and Mac App Store) ids match `app_store_product_id`. Play Store ids match
    `play_store_product_id` exactly, else by their subscription id: RevenueCat names a
    Play subscription's base plan `subscription_id:base_plan_id`, and the catalog may
    name only the subscription.
    """
    if store_product_id is None:
        return None
    if store in rce.APP_STORE_STORES:
        return next(
            (p for p in catalog.products if p.app_store_product_id == store_product_id), None
        )
    if store in rce.PLAY_STORE_STORES:
        candidates = [store_product_id, store_product_id.split(":", 1)[0]]
        for candidate in candidates:
            for product in catalog.products:
                if product.play_store_product_id == candidate:
                    return product
    return None


def _subject(catalog: Catalog, event: rce.Event) -> tuple[str | None, Product | None, str | None]:
    """The event's subject, its product, and why it is ignored (None when it is not)."""
    if event.type == "TEST":
        return None, None, "a test event from RevenueCat's dashboard"
    if event.type == "TRANSFER":
        if not event.transferred_to or not event.transferred_from:
            return None, None, "a transfer that names no app user to move from or to"
        return TRANSFERS, None, None
    if event.store not in rce.APP_STORE_STORES | rce.PLAY_STORE_STORES:
        return None, None, f"store {event.store!r} is not one we map to the catalog"
    product = product_for(catalog, event.store, event.product_id)
    if product is None:
        return (
            None,
            None,
            (f"no catalog product has the {event.store} product id {event.product_id!r}"),
        )
    if event.app_user_id is None:
        return None, None, "the event names no app_user_id"
    if product.recurring_interval is not None and event.type in rce.SUBSCRIPTION_TYPES:
        if event.original_transaction_id is None or event.purchased_at is None:
            return (
                None,
                None,
                "a subscription event without original_transaction_id or purchased_at_ms",
            )
        return _SUBSCRIPTION + event.original_transaction_id, product, None
    if product.recurring_interval is None and event.type in rce.PURCHASE_TYPES:
        if event.type == "CANCELLATION" and not event.is_refund:
            return None, None, "a one-time purchase canceled without a refund"
        if event.transaction_id is None or event.purchased_at is None:
            return None, None, "a purchase event without transaction_id or purchased_at_ms"
        return _PURCHASE + event.transaction_id, product, None
    kind = "a subscription" if product.recurring_interval is not None else "a one-time product"
    return None, None, f"{event.type} of {kind} ({product.id}): nothing to apply"


def _events_of(conn: Connection, app_id: str, subject: str) -> list[rce.Event]:
    return [
        rce.from_record(json.loads(row.detail or "{}")["event"])
        for row in webhook_store.list_webhook_events_about(
            conn, app_id, Provider.REVENUECAT, subject
        )
    ]


def _owner(
    ctx: ServiceContext,
    conn: Connection,
    app: app_store.AppRow,
    external_id: str,
    now: datetime,
) -> customer_store.CustomerRow:
    return locked_customer(ctx, conn, app, CustomerRef.external(external_id), create=True, now=now)


# --- subscriptions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _History:
    """A subscription as all its events tell it."""

    opened_by: rce.Event
    target: Subscription
    """Its state as of its latest event (before a refund, the state it was refunded in)."""
    changes: list[ProductChange]
    anchors: list[datetime]
    refunded_at: datetime | None


def _fold(catalog: Catalog, events: list[rce.Event]) -> _History | None:
    """What a subscription's events, oldest first, tell; None before its INITIAL_PURCHASE.

    The INITIAL_PURCHASE opens the fold; each later event of a recurring catalog product
    is applied in turn (`_take_event`) until a refund, which ends the history there.
    """
    opening = next((e for e in events if e.type == "INITIAL_PURCHASE"), None)
    if opening is None or opening.purchased_at is None or opening.expires_at is None:
        return None
    told = _opened(catalog, opening, opening.purchased_at, opening.expires_at)
    refunded_at: datetime | None = None
    for event in events[events.index(opening) + 1 :]:
        named = product_for(catalog, event.store, event.product_id)
        if named is None or named.recurring_interval is None:
            continue
        if event.is_refund:
            refunded_at = max(event.occurred_at, told.start)
            break
        _take_event(catalog, told, event, named.id, named.recurring_interval)
    return _History(opening, _target(told), told.changes, told.anchors, refunded_at)


@dataclass(slots=True)
class _Told:
    """What a subscription's events told so far: the running state of `_fold`."""

    start: datetime
    product: str
    interval: Interval
    anchor: datetime
    anchors: list[datetime]
    changes: list[ProductChange]
    status: SubscriptionStatus
    period_start: datetime
    period_end: datetime
    trial_end: datetime | None
    cancel: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    pending: PendingChange | None = None


def _opened(catalog: Catalog, opening: rce.Event, start: datetime, expires_at: datetime) -> _Told:
    """The subscription as its INITIAL_PURCHASE opens it: its product, its first period,
    and its trial (whose end is then its billing anchor)."""
    first = product_for(catalog, opening.store, opening.product_id)
    if first is None or first.recurring_interval is None:
        raise InvariantViolation(
            f"event {opening.id}: a subscription's INITIAL_PURCHASE names no recurring product"
        )
    trial_end = expires_at if opening.is_trial else None
    anchor = trial_end or start
    return _Told(
        start=start,
        product=first.id,
        interval=first.recurring_interval,
        anchor=anchor,
        anchors=[anchor],
        changes=[],
        status=SubscriptionStatus.TRIALING if opening.is_trial else SubscriptionStatus.ACTIVE,
        period_start=start,
        period_end=expires_at,
        trial_end=trial_end,
    )


def _take_event(
    catalog: Catalog, told: _Told, event: rce.Event, product_id: str, interval: Interval
) -> None:
    """Apply one later event (of recurring product `product_id`): the product it carries,
    the period it bills, then what its type says of the lifecycle."""
    began = max(event.purchased_at or event.occurred_at, told.start)
    if product_id != told.product and event.type != "PRODUCT_CHANGE":
        _take_product(told, began, product_id, interval)
    if (
        event.purchased_at is not None
        and event.expires_at is not None
        and event.expires_at > event.purchased_at
    ):
        told.period_start, told.period_end = event.purchased_at, event.expires_at
    _take_lifecycle(catalog, told, event, began)


def _take_product(told: _Told, began: datetime, product_id: str, interval: Interval) -> None:
    """An event carrying another product: the change happened when it began (never before
    an earlier change), and a new interval bills from there."""
    at = max([began, *(c.at for c in told.changes)])
    told.changes.append(ProductChange(at, told.product, product_id))
    if interval is not told.interval:
        told.anchor = at
    told.product, told.interval = product_id, interval
    told.anchors.append(told.anchor)
    told.pending = None


def _take_lifecycle(catalog: Catalog, told: _Told, event: rce.Event, began: datetime) -> None:
    """What the event's type says of the status, the cancellation and a pending change."""
    if event.type in ("INITIAL_PURCHASE", "RENEWAL"):
        _take_renewal(told, event, began)
    elif event.type == "CANCELLATION":
        if event.cancel_reason == "BILLING_ERROR":
            told.status = SubscriptionStatus.PAST_DUE
        else:
            told.cancel, told.canceled_at, told.pending = True, event.occurred_at, None
    elif event.type == "UNCANCELLATION":
        told.cancel, told.canceled_at = False, None
    elif event.type == "BILLING_ISSUE":
        if told.ended_at is None:
            told.status = SubscriptionStatus.PAST_DUE
    elif event.type == "EXPIRATION":
        told.status = SubscriptionStatus.EXPIRED
        told.ended_at = max(event.expires_at or event.occurred_at, told.start)
        told.cancel, told.pending = False, None
    elif event.type == "PRODUCT_CHANGE":
        told.pending = _pending_change(catalog, event, told.product, told.period_end)


def _take_renewal(told: _Told, event: rce.Event, began: datetime) -> None:
    """A purchase or renewal: live again (trialing or active), nothing canceled or pending."""
    if told.ended_at is not None and began > told.ended_at:
        # A resubscription after it had ended: billing counts from its new start.
        told.anchor = began
        told.anchors[-1] = told.anchor
    told.status = SubscriptionStatus.TRIALING if event.is_trial else SubscriptionStatus.ACTIVE
    if event.is_trial and event.expires_at is not None:
        told.trial_end = event.expires_at
    told.cancel, told.canceled_at, told.ended_at, told.pending = False, None, None, None


def _target(told: _Told) -> Subscription:
    """The subscription as of the last event folded (an ended one cancels nothing and
    changes to nothing)."""
    return Subscription(
        product_id=told.product,
        interval=told.interval,
        status=told.status,
        anchor=told.anchor,
        period_start=told.period_start,
        period_end=told.period_end,
        trial_end=told.trial_end,
        cancel_at_period_end=told.cancel and told.ended_at is None,
        canceled_at=told.canceled_at,
        ended_at=told.ended_at,
        payment_method_attached=True,
        pending_change=told.pending if told.ended_at is None else None,
    )


def _pending_change(
    catalog: Catalog, event: rce.Event, current: str, period_end: datetime
) -> PendingChange | None:
    """A PRODUCT_CHANGE: the new product takes effect when a later event carries it (a
    RENEWAL, or a store's new INITIAL_PURCHASE); until then it shows as pending."""
    new = product_for(catalog, event.store, event.new_product_id)
    if new is None or new.recurring_interval is None or new.id == current:
        return None
    change_type, _ = classify_change(plan_of(catalog.products_by_id[current]), plan_of(new))
    return PendingChange(
        change_id=event.id,
        type=change_type,
        billing_mode=BillingMode.PERIOD_END,
        status=ChangeStatus.PENDING,
        from_product_id=current,
        to_product_id=new.id,
        to_interval=new.recurring_interval,
        effective_at=event.expires_at or period_end,
    )


def _follow_subscription(
    ctx: ServiceContext,
    conn: Connection,
    app: app_store.AppRow,
    catalog: Catalog,
    subject: str,
    now: datetime,
) -> _Outcome:
    """Bring the subscription to what all its recorded events tell."""
    reference = subject.removeprefix(_SUBSCRIPTION)
    history = _fold(catalog, _events_of(conn, app.id, subject))
    source = source_store.find_source_by_ref(conn, app.id, Provider.REVENUECAT, reference)
    if source is not None and source.status in FINAL:
        return _Outcome("ignored", f"{reference} was {source.status}: its access is final")
    if history is None:
        return _Outcome("pending", f"{reference}: waiting for its INITIAL_PURCHASE")
    if source is None:
        opener = history.opened_by.app_user_id
        if opener is None:
            raise InvariantViolation(f"{reference}: its INITIAL_PURCHASE names no app user")
        owner = _owner(ctx, conn, app, opener, now)
    else:
        owner = locked_customer(
            ctx, conn, app, CustomerRef(customer_id=source.customer_id), create=False, now=now
        )
    # Under the holder's lock now: read again what an event of it committed meanwhile.
    source = source_store.find_source_by_ref(conn, app.id, Provider.REVENUECAT, reference)
    if source is not None and source.status in FINAL:
        return _Outcome("ignored", f"{reference} was {source.status}: its access is final")
    if source is not None and source.customer_id != owner.id:
        owner = locked_customer(
            ctx, conn, app, CustomerRef(customer_id=source.customer_id), create=False, now=now
        )
    history = _fold(catalog, _events_of(conn, app.id, subject))
    if history is None:
        raise InvariantViolation(
            f"{reference}: its INITIAL_PURCHASE vanished: events are never deleted"
        )
    target = history.target
    # A refund takes back what was left when it happened: nothing is evaluated past it.
    until = now if history.refunded_at is None else min(now, history.refunded_at)
    started_at = history.opened_by.purchased_at
    if started_at is None:
        raise InvariantViolation(f"{reference}: its INITIAL_PURCHASE has no purchased_at")
    source = access.follow_history(
        conn,
        catalog,
        owner,
        access.KnownSubscription(source, Provider.REVENUECAT, reference),
        access.ToldHistory(target, history.changes, history.anchors, started_at),
        until,
    )
    if history.refunded_at is not None:
        access.revoke_source(conn, source, now, status="refunded", at=history.refunded_at)
        return _Outcome("applied", f"{reference}: refunded")
    moved = _follow_transfers(ctx, conn, app, source, now)
    return _Outcome("applied", f"{reference}: {target.status.value}{moved}")


# --- one-time purchases -------------------------------------------------------------------


def _follow_purchase(
    ctx: ServiceContext,
    conn: Connection,
    app: app_store.AppRow,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    subject: str,
    now: datetime,
) -> _Outcome:
    """Open the purchase its events name, and take it back if one of them is a refund."""
    reference = subject.removeprefix(_PURCHASE)
    events = _events_of(conn, app.id, subject)
    source = source_store.find_source_by_ref(conn, app.id, Provider.REVENUECAT, reference)
    if source is not None and source.status in FINAL:
        return _Outcome("ignored", f"{reference} was {source.status}: its access is final")
    # Every event of a purchase names it whole (product, when bought): the first opens it.
    first = events[0]
    refunds = [e.occurred_at for e in events if e.is_refund]
    if first.purchased_at is None:
        raise InvariantViolation(f"{reference}: a purchase event without purchased_at")
    purchased_at = min(first.purchased_at, now)
    refunded_at = max(min(min(refunds), now), purchased_at) if refunds else None
    if source is None:
        product = product_for(catalog, first.store, first.product_id)
        if product is None or first.app_user_id is None:
            raise InvariantViolation(f"{reference}: a purchase of no product or by no app user")
        owner = customer
        if first.app_user_id != customer.external_id:
            owner = _owner(ctx, conn, app, first.app_user_id, now)
        source = access.open_purchase(
            conn,
            catalog,
            owner,
            product,
            purchased_at,
            now,
            provider=Provider.REVENUECAT,
            provider_ref=reference,
            as_of=refunded_at,
        )
    if refunded_at is not None:
        access.revoke_source(conn, source, now, status="refunded", at=refunded_at)
        return _Outcome("applied", f"{reference}: refunded")
    moved = _follow_transfers(ctx, conn, app, source, now)
    return _Outcome("applied", f"{reference}: purchased{moved}")


# --- transfers ----------------------------------------------------------------------------


def _transfer(
    ctx: ServiceContext, conn: Connection, app: app_store.AppRow, event: rce.Event, now: datetime
) -> _Outcome:
    """Move every RevenueCat source the `transferred_from` users hold to the (first)
    `transferred_to` user, at the event's instant."""
    moved = 0
    for external_id in event.transferred_from:
        found = customer_store.find_customer(conn, app.id, external_id=external_id)
        if found is None or external_id == event.transferred_to[0]:
            continue
        for source in source_store.list_sources(conn, found.id):
            if source.provider == Provider.REVENUECAT and source.status not in FINAL:
                moved += _apply_transfers(ctx, conn, app, source, [event], now)[1]
    return _Outcome("applied", f"moved {moved} source(s) to {event.transferred_to[0]!r}")


def _follow_transfers(
    ctx: ServiceContext,
    conn: Connection,
    app: app_store.AppRow,
    source: source_store.SourceRow,
    now: datetime,
) -> str:
    """A source learned of after a transfer that named its holder moves too."""
    transfers = _events_of(conn, app.id, TRANSFERS)
    if not transfers:
        return ""
    _, moved = _apply_transfers(ctx, conn, app, source, transfers, now)
    return f", moved by {moved} transfer(s)" if moved else ""


def _apply_transfers(
    ctx: ServiceContext,
    conn: Connection,
    app: app_store.AppRow,
    source: source_store.SourceRow,
    transfers: list[rce.Event],
    now: datetime,
) -> tuple[source_store.SourceRow, int]:
    moved = 0
    for transfer in transfers:
        holder = customer_store.find_customer(conn, app.id, customer_id=source.customer_id)
        if holder is None:
            raise InvariantViolation(
                f"customer {source.customer_id} vanished: customers are never deleted"
            )
        at = transfer.occurred_at
        recipient_id = transfer.transferred_to[0]
        if (
            holder.external_id not in transfer.transferred_from
            or holder.external_id == recipient_id
            or at < source.started_at
            or not _gives_access_at(source, at)
        ):
            continue
        locked_customer(ctx, conn, app, CustomerRef(customer_id=holder.id), create=False, now=now)
        recipient = _owner(ctx, conn, app, recipient_id, now)
        source = access.move_source(conn, source, recipient, at, now)
        moved += 1
    return source, moved


def _gives_access_at(source: source_store.SourceRow, at: datetime) -> bool:
    if source.status in FINAL:
        return False
    if not access.is_subscription(source):
        return source.ended_at is None or source.ended_at > at
    sub = access.subscription_of(source)
    return sub.access_ends_at > at
