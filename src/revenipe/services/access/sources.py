"""One-off purchases, revocations (refunds, disputes), transfers between customers,
and a provider's told history replayed onto a subscription.

Runs inside the caller's write transaction, after the customer's row lock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, Product
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
from revenipe.storage import repository as repo


def open_purchase(
    conn: Connection,
    catalog: Catalog,
    customer: repo.CustomerRow,
    product: Product,
    purchased_at: datetime,
    now: datetime,
    *,
    provider: str,
    provider_ref: str | None = None,
    source_id: str | None = None,
    as_of: datetime | None = None,
) -> repo.SourceRow:
    """A one-time purchase (a pack, a lifetime add-on): its grants from `purchased_at`.

    `as_of` brings the new grants only up to that instant (see `insert_grant`): a
    purchase first learned of after it was refunded, revoked at the refund next.
    """
    source = repo.SourceRow(
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
    repo.insert_source(conn, source)
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
    return source


def revoke_source(
    conn: Connection,
    source: repo.SourceRow,
    now: datetime,
    *,
    status: str,
    at: datetime | None = None,
) -> repo.SourceRow:
    """Take access back (a refund, a lost dispute): what every grant has left is revoked
    by a ledger entry, and the source ends. Units already consumed stay consumed.

    `at` (at or before `now`, default `now`) is when the provider took it back: the
    entries are effective then, so learning of a refund late changes nothing but when
    it was recorded.
    """
    at = min(at or now, now)
    rows: list[repo.GrantRow] = []
    entries: list[PendingEntry] = []
    for row in repo.grants_of_source(conn, source.id):
        revoked, new_entries = revoke(row.grant, at)
        if revoked != row.grant:
            rows.append(replace(row, grant=revoked))
            entries.extend(new_entries)
    repo.save_grant_terms(conn, rows)
    repo.insert_entries(conn, source.app_id, source.customer_id, entries, now)
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
    repo.update_source(conn, ended)
    repo.refresh_customer_due(conn, source.customer_id)
    return ended


def follow_history(
    conn: Connection,
    catalog: Catalog,
    customer: repo.CustomerRow,
    source: repo.SourceRow | None,
    target: Subscription,
    changes: list[ProductChange],
    anchors: list[datetime],
    started_at: datetime,
    now: datetime,
    *,
    provider: str,
    provider_ref: str,
    source_id: str | None = None,
) -> repo.SourceRow:
    """Bring a provider's subscription to `target`, replaying its plan history.

    `changes` are the subscription's product changes, oldest first, and `anchors` the
    billing anchor of each phase (one more than changes). Before the last change the
    subscription gave each phase's product until the next change; the last phase is
    `target` itself. The source's `provider_state_at` is the instant of the last change
    applied (its start before any), so each change is applied once, and a history
    applied again changes nothing. A missing source is opened at `started_at`.
    """
    products = [changes[0].from_product_id if changes else target.product_id]
    products += [c.to_product_id for c in changes]

    def phase(index: int) -> Subscription:
        if index == len(changes):
            return target
        interval = catalog.products_by_id[products[index]].recurring_interval
        assert interval is not None
        return replace(
            target,
            product_id=products[index],
            interval=interval,
            anchor=anchors[index],
            status=target.status if target.is_live else SubscriptionStatus.ACTIVE,
            ended_at=min(changes[index].at, now),
            cancel_at_period_end=False,
            pending_change=None,
        )

    if source is None:
        source = open_subscription(
            conn,
            catalog,
            customer,
            phase(0),
            min(started_at, now),
            now,
            kind="subscription",
            provider=provider,
            provider_ref=provider_ref,
            source_id=source_id,
            provider_state_at=started_at,
        )
        applied_until = started_at
    else:
        applied_until = source.provider_state_at or source.started_at
    for index, change in enumerate(changes, start=1):
        if change.at <= applied_until:
            continue
        if source.product_id == products[index - 1]:
            # First the phase before the change, through to it: had we missed a renewal
            # before the change, that phase's grants would end at its old period's end.
            source = update_subscription(conn, catalog, source, phase(index - 1), now)
        source = update_subscription(
            conn,
            catalog,
            source,
            phase(index),
            now,
            product_changes=[replace(change, at=min(change.at, now))],
            provider_state_at=change.at,
        )
    # The provider's state itself (a product that changed with no history changes now).
    return update_subscription(conn, catalog, source, target, now)


def move_source(
    conn: Connection,
    source: repo.SourceRow,
    customer: repo.CustomerRow,
    at: datetime,
    now: datetime,
) -> repo.SourceRow:
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
    carried: list[repo.GrantRow] = []
    for row in repo.grants_of_source(conn, source.id):
        settled, _ = settle(row.grant, at)
        if settled.status is GrantStatus.ACTIVE:
            carried.append(replace(row, grant=settled))
    renamed = replace(source, provider_ref=f"{source.provider_ref}>{moved.id}"[:255])
    revoke_source(conn, renamed, now, status="transferred", at=at)
    repo.insert_source(conn, moved)
    for row in carried:
        grant = replace(row.grant, id=new_id("grt"), source_id=moved.id, created_at=at)
        repo.insert_grant(conn, customer.app_id, customer.id, replace(row, grant=grant))
        if grant.balance:
            entry = PendingEntry(grant.id, EntryKind.GRANTED, grant.balance, grant.balance, at)
            repo.insert_entries(conn, customer.app_id, customer.id, [entry], now)
        later, entries = settle(grant, now)
        if entries or later != grant:
            repo.save_grant_states(conn, [later])
            repo.insert_entries(conn, customer.app_id, customer.id, entries, now)
    repo.refresh_customer_due(conn, customer.id)
    return moved
