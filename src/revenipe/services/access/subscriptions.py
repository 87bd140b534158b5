"""Subscriptions as access sources: opened, updated as the lifecycle moves them
(renewals, cancels, plan changes), their grants kept in step with each period.

Runs inside the caller's write transaction, after the customer's row lock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, ResetKind
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.grants import (
    ResetRule,
)
from revenipe.engine.periods import Interval
from revenipe.engine.sources import Provider
from revenipe.engine.subscriptions import (
    BillingMode,
    ChangeStatus,
    ChangeType,
    PendingChange,
    ProductChange,
    Subscription,
    SubscriptionStatus,
)
from revenipe.services.access import holds
from revenipe.services.access.grants import end_grants, grant_product, move_access_end
from revenipe.services.context import new_id
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import sources as source_store

# --- sources --------------------------------------------------------------------------


def subscription_of(source: source_store.SourceRow) -> Subscription:
    """The engine's view of a recurring source."""
    if (
        source.billing_anchor is None
        or source.billing_interval is None
        or source.product_id is None
        or source.current_period_start is None
        or source.current_period_end is None
    ):
        raise InvariantViolation(f"access source {source.id} is not a subscription")
    return Subscription(
        product_id=source.product_id,
        interval=Interval(source.billing_interval),
        status=SubscriptionStatus(source.status),
        anchor=source.billing_anchor,
        period_start=source.current_period_start,
        period_end=source.current_period_end,
        trial_end=source.trial_end,
        cancel_at_period_end=source.cancel_at_period_end,
        canceled_at=source.canceled_at,
        ended_at=source.ended_at,
        payment_method_attached=source.payment_method_attached,
        pending_change=_pending_from_json(source.pending_change),
    )


def is_subscription(source: source_store.SourceRow) -> bool:
    return source.billing_interval is not None


def pending_change_of(source: source_store.SourceRow) -> PendingChange | None:
    return _pending_from_json(source.pending_change)


def _pending_to_json(change: PendingChange | None) -> str | None:
    if change is None:
        return None
    values = asdict(change)
    values["effective_at"] = change.effective_at.isoformat()
    return json.dumps(values, sort_keys=True)


def _pending_from_json(text: str | None) -> PendingChange | None:
    if text is None:
        return None
    values = json.loads(text)
    return PendingChange(
        change_id=values["change_id"],
        type=ChangeType(values["type"]),
        billing_mode=BillingMode(values["billing_mode"]),
        status=ChangeStatus(values["status"]),
        from_product_id=values["from_product_id"],
        to_product_id=values["to_product_id"],
        to_interval=Interval(values["to_interval"]),
        effective_at=datetime.fromisoformat(values["effective_at"]),
    )


def _with_subscription(
    source: source_store.SourceRow, sub: Subscription, now: datetime
) -> source_store.SourceRow:
    scheduled_end = sub.period_end if sub.cancel_at_period_end else None
    return replace(
        source,
        product_id=sub.product_id,
        status=sub.status.value,
        current_period_start=sub.period_start,
        current_period_end=sub.period_end,
        expires_at=sub.ended_at if sub.ended_at is not None else scheduled_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        canceled_at=sub.canceled_at,
        trial_end=sub.trial_end,
        ended_at=sub.ended_at,
        billing_anchor=sub.anchor,
        billing_interval=sub.interval.value,
        payment_method_attached=sub.payment_method_attached,
        pending_change=_pending_to_json(sub.pending_change),
        due_at=lifecycle.next_transition(sub) if source.provider == Provider.SANDBOX else None,
        updated_at=now,
    )


def open_subscription(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    sub: Subscription,
    started_at: datetime,
    now: datetime,
    *,
    kind: str,
    provider: str,
    provider_ref: str | None = None,
    source_id: str | None = None,
    provider_state_at: datetime | None = None,
) -> source_store.SourceRow:
    """A new recurring source in state `sub`, its product's grants from `started_at`."""
    product = catalog.products_by_id[sub.product_id]
    blank = source_store.SourceRow(
        id=source_id or new_id("src"),
        app_id=customer.app_id,
        customer_id=customer.id,
        product_id=sub.product_id,
        kind=kind,
        provider=provider,
        status=sub.status.value,
        started_at=started_at,
        current_period_start=None,
        current_period_end=None,
        expires_at=None,
        cancel_at_period_end=False,
        canceled_at=None,
        created_at=now,
        provider_ref=provider_ref,
        provider_state_at=provider_state_at,
    )
    source = _with_subscription(blank, sub, now)
    source_store.insert_source(conn, source)
    outbound_emit.source_changed(conn, None, source, now)
    grant_product(
        conn,
        customer.app_id,
        customer.id,
        source.id,
        catalog,
        product,
        started_at,
        now,
        access_ends_at=sub.access_ends_at,
        period_anchor=sub.anchor,
    )
    customer_store.update_customer_due(conn, customer.id)
    outbound_emit.balances_changed(conn, catalog, customer.app_id, customer.id, now)
    return source


def update_subscription(
    conn: Connection,
    catalog: Catalog,
    source: source_store.SourceRow,
    sub: Subscription,
    now: datetime,
    *,
    product_changes: list[ProductChange] | None = None,
    provider_state_at: datetime | None = None,
) -> source_store.SourceRow:
    """Bring a recurring source and its grants to state `sub`.

    `product_changes` are the instants its product changed since it was last written
    (plan changes): at each, the old product's grants end and the new one's begin. A
    product that differs with no change given changed now. A subscription that had
    ended and starts a new period later (a store resubscription) starts fresh grants at
    that period's start instead of reviving the old ones.
    """
    before = subscription_of(source)
    changes = list(product_changes or ())
    if not changes and sub.product_id != before.product_id:
        changes = [ProductChange(now, before.product_id, sub.product_id)]
    if (
        not changes
        and sub.period_start > before.period_start
        and _terms_changed(conn, catalog, source, sub.product_id)
    ):
        # A new catalog version changed what this plan grants: existing subscribers get
        # the new terms from the renewal on, never in the middle of a paid period
        # (docs/adr/0004).
        changes = [ProductChange(sub.period_start, sub.product_id, sub.product_id)]
    restart_at: datetime | None = None
    if not before.is_live and sub.is_live and sub.period_start > before.access_ends_at:
        restart_at = sub.period_start
    for change in changes:
        if before.is_live:
            # The old plan was paid through the change: a renewal reported with it (a
            # missed period end) refills its grants before they end at the change.
            move_access_end(conn, source, change.at, now)
        end_grants(conn, source, change.at, now)
        _grant_current(conn, catalog, source, sub, change.to_product_id, change.at, now)
    if restart_at is not None and not changes:
        end_grants(conn, source, before.access_ends_at, now)
        _grant_current(conn, catalog, source, sub, sub.product_id, restart_at, now)
    updated = _with_subscription(source, sub, now)
    if provider_state_at is not None:
        updated = replace(updated, provider_state_at=provider_state_at)
    source_store.update_source(conn, updated)
    outbound_emit.source_changed(conn, source, updated, now)
    move_access_end(conn, updated, sub.access_ends_at, now)
    customer_store.update_customer_due(conn, source.customer_id)
    outbound_emit.balances_changed(conn, catalog, source.app_id, source.customer_id, now)
    return updated


def _terms(
    entitlement_id: str,
    amount: int,
    priority: int,
    reset: ResetRule | None,
    follows_period: bool,
    expiry: datetime | None,
) -> tuple[object, ...]:
    rule = (reset.interval.value, reset.rollover.min, reset.rollover.max) if reset else None
    return (entitlement_id, amount, priority, rule, follows_period, expiry)


def _terms_changed(
    conn: Connection, catalog: Catalog, source: source_store.SourceRow, product_id: str
) -> bool:
    """Whether the grants the source's product gives now differ from those it holds."""
    product = catalog.products_by_id.get(product_id)
    # The grants of the source's current terms are the latest it was given; grants that
    # ended the instant they began (a plan changed twice at once) are not among them.
    rows = [
        row
        for row in grant_store.list_grants_of_source(conn, source.id)
        if row.term_expires_at is None or row.term_expires_at > row.grant.created_at
    ]
    if product is None or not rows:
        return False
    start = max(row.grant.created_at for row in rows)
    held = [
        _terms(
            row.grant.entitlement_id,
            row.grant.amount,
            row.grant.priority,
            row.grant.reset,
            row.follows_period,
            row.term_expires_at,
        )
        for row in rows
        if row.grant.created_at == start
    ]
    offered = []
    for spec in product.grants:
        reset = None
        if spec.reset is not ResetKind.NEVER:
            interval = (
                product.recurring_interval
                if spec.reset is ResetKind.PERIOD
                else Interval(spec.reset.value)
            )
            if interval is None:
                raise InvariantViolation(
                    f"product {product.id}: a period reset needs a recurring product"
                )
            reset = ResetRule(interval, start, spec.rollover)
        expiry = spec.expires_after.after(start) if spec.expires_after else None
        offered.append(
            _terms(
                spec.entitlement_id,
                spec.amount or 0,
                spec.priority,
                reset,
                spec.reset is ResetKind.PERIOD,
                expiry,
            )
        )
    return sorted(held, key=repr) != sorted(offered, key=repr)


def _grant_current(
    conn: Connection,
    catalog: Catalog,
    source: source_store.SourceRow,
    sub: Subscription,
    product_id: str,
    start: datetime,
    now: datetime,
) -> None:
    product = catalog.products_by_id.get(product_id)
    if product is None or product.recurring_interval is None:
        # Applying a catalog refuses this for live subscriptions; a provider may still
        # report a product the catalog never had.
        raise RevenipeError(
            ErrorCode.PRODUCT_NOT_FOUND,
            f"subscription {source.id} moves to product {product_id!r}, which is not a "
            "recurring product of the app's catalog",
            field="product_id",
        )
    grant_product(
        conn,
        source.app_id,
        source.customer_id,
        source.id,
        catalog,
        product,
        start,
        now,
        access_ends_at=sub.access_ends_at,
        period_anchor=sub.anchor,
    )


# --- catching up ------------------------------------------------------------------------


def catch_up(conn: Connection, catalog: Catalog, customer_id: str, now: datetime) -> None:
    """Apply every change of the customer's sources that fell due by `now`: the sandbox
    renewing its subscriptions, trials ending, scheduled plan changes and cancellations.

    Each happens at its own instant in the past, so the result is the same whenever it
    runs; the caller runs it when `customers.due_at` has passed, before anything reads
    or spends a balance. Holds whose TTL ran out are released each at its expiry
    (`holds`, docs/concepts/reservations.md): those that expired before the sources'
    first change, then the changes, then the rest.
    """
    due = source_store.list_sources_due(conn, customer_id, now)
    first_change = min((s.due_at for s in due if s.due_at is not None), default=None)
    holds.release_expired_holds(conn, catalog, customer_id, now, before=first_change)
    for source in due:
        if source.provider == Provider.SANDBOX and is_subscription(source):
            sub, changes = lifecycle.advance(subscription_of(source), now)
            update_subscription(conn, catalog, source, sub, now, product_changes=changes)
        else:
            source_store.update_source(conn, replace(source, due_at=None, updated_at=now))
    if first_change is not None:
        holds.release_expired_holds(conn, catalog, customer_id, now)
    customer_store.update_customer_due(conn, customer_id)
