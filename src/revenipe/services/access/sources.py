"""One-off purchases, revocations (refunds, disputes), transfers between customers,
and a provider's told history replayed onto a subscription.

Runs inside the caller's write transaction, after the customer's row lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
from revenipe.engine.errors import InvariantViolation
from revenipe.engine.grants import (
    EntryKind,
    GrantStatus,
    PendingEntry,
    revoke,
    settle,
)
from revenipe.engine.subscriptions import (
    ProductChange,
    Subscription,
    SubscriptionStatus,
)
from revenipe.services.access.grants import earliest, grant_product
from revenipe.services.access.subscriptions import open_subscription, update_subscription
from revenipe.services.context import new_id
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import sources as source_store


def open_purchase(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    product: Product,
    purchased_at: datetime,
    now: datetime,
    *,
    provider: str,
    provider_ref: str | None = None,
    source_id: str | None = None,
    as_of: datetime | None = None,
) -> source_store.SourceRow:
    """A one-time purchase (a pack, a lifetime add-on): its grants from `purchased_at`.

    `as_of` brings the new grants only up to that instant (see `insert_grant`): a
    purchase first learned of after it was refunded, revoked at the refund next.
    """
    source = source_store.SourceRow(
        id=source_id or new_id("src"),
        app_id=customer.app_id,
        customer_id=customer.id,
        product_id=product.id,
        kind="purchase",
        provider=provider,
        status="active",
        started_at=purchased_at,
        current_period_start=None,
        current_period_end=None,
        expires_at=None,
        cancel_at_period_end=False,
        canceled_at=None,
        created_at=now,
        provider_ref=provider_ref,
        updated_at=now,
    )
    source_store.insert_source(conn, source)
    outbound_emit.source_changed(conn, None, source, now)
    grant_product(
        conn,
        customer.app_id,
        customer.id,
        source.id,
        catalog,
        product,
        purchased_at,
        now,
        as_of=as_of,
    )
    outbound_emit.balances_changed(conn, catalog, customer.app_id, customer.id, now)
    return source


def revoke_source(
    conn: Connection,
    source: source_store.SourceRow,
    now: datetime,
    *,
    status: str,
    at: datetime | None = None,
) -> source_store.SourceRow:
    """Take access back (a refund, a lost dispute): what every grant has left is revoked
    by a ledger entry, and the source ends. Units already consumed stay consumed.

    `at` (at or before `now`, default `now`) is when the provider took it back: the
    entries are effective then, so learning of a refund late changes nothing but when
    it was recorded.
    """
    at = min(at or now, now)
    rows: list[grant_store.GrantRow] = []
    entries: list[PendingEntry] = []
    for row in grant_store.list_grants_of_source(conn, source.id):
        revoked, new_entries = revoke(row.grant, at)
        if revoked != row.grant:
            rows.append(replace(row, grant=revoked))
            entries.extend(new_entries)
    grant_store.save_grant_terms(conn, rows)
    ledger_store.insert_entries(conn, source.app_id, source.customer_id, entries, now)
    ended = replace(
        source,
        status=status,
        ended_at=source.ended_at or at,
        expires_at=earliest(source.expires_at, at),
        cancel_at_period_end=False,
        pending_change=None,
        due_at=None,
        updated_at=now,
    )
    source_store.update_source(conn, ended)
    outbound_emit.source_changed(conn, source, ended, now)
    customer_store.update_customer_due(conn, source.customer_id)
    return ended


@dataclass(frozen=True, slots=True)
class KnownSubscription:
    """What this database knows of a provider's subscription before its history is
    replayed: the source that follows it, if any, and the names a new one takes."""

    source: source_store.SourceRow | None
    """The source following the subscription; None before the first of its events."""
    provider: str
    provider_ref: str
    """The provider's id of the subscription (the source's `provider_ref`)."""
    source_id: str | None = None
    """The id a missing source is opened with (one reserved when the purchase began);
    None for a new id."""


@dataclass(frozen=True, slots=True)
class ToldHistory:
    """What the provider tells of a subscription: its state now and its plan history.

    `changes` are its product changes, oldest first, and `anchors` the billing anchor of
    each phase (one more than changes). Before the last change the subscription gave
    each phase's product until the next change; the last phase is `target` itself.
    """

    target: Subscription
    changes: Sequence[ProductChange]
    anchors: Sequence[datetime]
    started_at: datetime

    def product_of_phase(self, index: int) -> str:
        """The product phase `index` gave (0: before the first change)."""
        if index > 0:
            return self.changes[index - 1].to_product_id
        return self.changes[0].from_product_id if self.changes else self.target.product_id


def follow_history(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    known: KnownSubscription,
    told: ToldHistory,
    now: datetime,
) -> source_store.SourceRow:
    """Bring a provider's subscription to `told.target`, replaying its plan history.

    The source's `provider_state_at` is the instant of the last change applied (its
    start before any), so each change is applied once, and a history applied again
    changes nothing. A missing source is opened for `customer` at `told.started_at`.
    """
    if known.source is None:
        source = _open_first_phase(conn, catalog, customer, known, told, now)
        applied_until = told.started_at
    else:
        source = known.source
        applied_until = source.provider_state_at or source.started_at
    for index, change in enumerate(told.changes, start=1):
        if change.at > applied_until:
            source = _replay_change(conn, catalog, source, told, index, now)
    # The provider's state itself (a product that changed with no history changes now).
    return update_subscription(conn, catalog, source, told.target, now)


def _phase(catalog: Catalog, told: ToldHistory, index: int, now: datetime) -> Subscription:
    """The subscription as it was in phase `index`: the last phase is the target itself;
    an earlier one gave its product, billed from its anchor, until the next change (live
    then, whatever the subscription's status is now)."""
    if index == len(told.changes):
        return told.target
    product_id = told.product_of_phase(index)
    interval = catalog.products_by_id[product_id].recurring_interval
    if interval is None:
        raise InvariantViolation(f"product {product_id} of a subscription's phase is not recurring")
    target = told.target
    return replace(
        target,
        product_id=product_id,
        interval=interval,
        anchor=told.anchors[index],
        status=target.status if target.is_live else SubscriptionStatus.ACTIVE,
        ended_at=min(told.changes[index].at, now),
        cancel_at_period_end=False,
        pending_change=None,
    )


def _open_first_phase(
    conn: Connection,
    catalog: Catalog,
    customer: customer_store.CustomerRow,
    known: KnownSubscription,
    told: ToldHistory,
    now: datetime,
) -> source_store.SourceRow:
    """Open the source a subscription first learned of now, in its first phase."""
    return open_subscription(
        conn,
        catalog,
        customer,
        _phase(catalog, told, 0, now),
        min(told.started_at, now),
        now,
        kind="subscription",
        provider=known.provider,
        provider_ref=known.provider_ref,
        source_id=known.source_id,
        provider_state_at=told.started_at,
    )


def _replay_change(
    conn: Connection,
    catalog: Catalog,
    source: source_store.SourceRow,
    told: ToldHistory,
    index: int,
    now: datetime,
) -> source_store.SourceRow:
    """Apply change `index` (1-based: the one that opened phase `index`) to the source."""
    change = told.changes[index - 1]
    if source.product_id == told.product_of_phase(index - 1):
        # First the phase before the change, through to it: had we missed a renewal
        # before the change, that phase's grants would end at its old period's end.
        source = update_subscription(
            conn, catalog, source, _phase(catalog, told, index - 1, now), now
        )
    return update_subscription(
        conn,
        catalog,
        source,
        _phase(catalog, told, index, now),
        now,
        product_changes=[replace(change, at=min(change.at, now))],
        provider_state_at=change.at,
    )


def move_source(
    conn: Connection,
    source: source_store.SourceRow,
    customer: customer_store.CustomerRow,
    at: datetime,
    now: datetime,
) -> source_store.SourceRow:
    """Move what a source gives to another customer at `at` (a store's transfer).

    The old customer's grants are taken back at `at` (`revoked` entries; the source's
    status becomes `transferred`) and the new customer's source holds, from `at`, what
    each had left then, on the same terms (resets, expiry, priority): a balance moves,
    it never doubles. The new source keeps the provider's reference; the old one's is
    suffixed with the new source's id.
    """
    at = min(max(at, source.started_at), now)
    moved = replace(
        source,
        id=new_id("src"),
        customer_id=customer.id,
        started_at=at,
        created_at=now,
        updated_at=now,
    )
    carried: list[grant_store.GrantRow] = []
    for row in grant_store.list_grants_of_source(conn, source.id):
        settled, _ = settle(row.grant, at)
        if settled.status is GrantStatus.ACTIVE:
            carried.append(replace(row, grant=settled))
    renamed = replace(source, provider_ref=f"{source.provider_ref}>{moved.id}"[:255])
    revoke_source(conn, renamed, now, status="transferred", at=at)
    source_store.insert_source(conn, moved)
    outbound_emit.source_changed(conn, None, moved, now)
    for row in carried:
        grant = replace(row.grant, id=new_id("grt"), source_id=moved.id, created_at=at)
        grant_store.insert_grant(conn, customer.app_id, customer.id, replace(row, grant=grant))
        if grant.balance:
            entry = PendingEntry(grant.id, EntryKind.GRANTED, grant.balance, grant.balance, at)
            ledger_store.insert_entries(conn, customer.app_id, customer.id, [entry], now)
        later, entries = settle(grant, now)
        if entries or later != grant:
            grant_store.save_grant_states(conn, [later])
            ledger_store.insert_entries(conn, customer.app_id, customer.id, entries, now)
    customer_store.update_customer_due(conn, customer.id)
    return moved
