"""Access sources and the grants they give: the one place that keeps grants in step
with what a customer holds.

Every way of getting a product ends here: a default or manual grant, a sandbox
checkout, a Stripe or store purchase. A source opens with its product's grants; a
subscription's grants stop paying when its access ends (`access_ends_at`: the end of
the period it is paid through, or when it ended) and renewals move that end on; a plan
change ends the old product's grants and starts the new one's at the instant of the
change; a refund or dispute takes back what is left. Every change is a ledger entry;
nothing is deleted or rewritten.

All functions run inside the caller's write transaction, after the customer's row lock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, EntitlementType, Product, ResetKind
from revenipe.engine import subscriptions as lifecycle
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.grants import (
    EntryKind,
    Grant,
    GrantStatus,
    PendingEntry,
    ResetRule,
    extend,
    revoke,
    settle,
)
from revenipe.engine.periods import Interval
from revenipe.engine.subscriptions import (
    BillingMode,
    ChangeStatus,
    ChangeType,
    PendingChange,
    ProductChange,
    Subscription,
    SubscriptionStatus,
)
from revenipe.services.context import new_id
from revenipe.storage import repository as repo

SANDBOX = "sandbox"
"""The provider of sources sold by the built-in sandbox (which renews them itself)."""


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The sooner of two optional instants (None is "never")."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# --- grants ---------------------------------------------------------------------------


def insert_grant(
    conn: Connection,
    app_id: str,
    customer_id: str,
    source_id: str,
    entitlement_id: str,
    entitlement_type: EntitlementType,
    amount: int,
    priority: int,
    start: datetime,
    now: datetime,
    *,
    term_expires_at: datetime | None = None,
    access_ends_at: datetime | None = None,
    reset: ResetRule | None = None,
    follows_period: bool = False,
    as_of: datetime | None = None,
) -> str:
    """One grant beginning at `start` (at or before `now`), brought up to `now`.

    The granted entry is effective at `start`; resets and expiry between `start` and
    `now` are written at once, so a grant made late is what it would have been if made
    on time. `as_of` (between `start` and `now`) brings it only that far: for a grant
    whose source is taken back at that instant next.
    """
    grant = Grant(
        id=new_id("grt"),
        entitlement_id=entitlement_id,
        source_id=source_id,
        amount=amount,
        balance=amount,
        priority=priority,
        created_at=start,
        period_start=start,
        expires_at=earliest(term_expires_at, access_ends_at),
        reset=reset,
    )
    row = repo.GrantRow(grant, entitlement_type.value, term_expires_at, follows_period)
    repo.insert_grant(conn, app_id, customer_id, row)
    if amount:
        entry = PendingEntry(grant.id, EntryKind.GRANTED, amount, amount, start)
        repo.insert_entries(conn, app_id, customer_id, [entry], now)
    # A grant that is born expired is written off at once, like any other expiry.
    settled, entries = settle(grant, as_of or now)
    if entries or settled != grant:
        repo.save_grant_states(conn, [settled])
        repo.insert_entries(conn, app_id, customer_id, entries, now)
    return grant.id


def grant_product(
    conn: Connection,
    app_id: str,
    customer_id: str,
    source_id: str,
    catalog: Catalog,
    product: Product,
    start: datetime,
    now: datetime,
    *,
    access_ends_at: datetime | None = None,
    period_anchor: datetime | None = None,
    priority: int | None = None,
    as_of: datetime | None = None,
) -> tuple[str, ...]:
    """The grants of `product` for one source, beginning at `start`.

    `reset: period` grants reset with the billing period counted from `period_anchor`
    (default `start`); other resets count from `start`. Each grant's own expiry
    (`expires_after`) counts from `start`; none pays past `access_ends_at`.
    """
    grant_ids = []
    for spec in product.grants:
        entitlement = catalog.entitlements_by_id[spec.entitlement_id]
        reset = None
        follows_period = spec.reset is ResetKind.PERIOD
        if follows_period:
            assert product.recurring_interval is not None, "validated: period needs an interval"
            reset = ResetRule(product.recurring_interval, period_anchor or start, spec.rollover)
        elif spec.reset is not ResetKind.NEVER:
            reset = ResetRule(Interval(spec.reset.value), start, spec.rollover)
        grant_ids.append(
            insert_grant(
                conn,
                app_id,
                customer_id,
                source_id,
                entitlement.id,
                entitlement.type,
                spec.amount or 0,
                spec.priority if priority is None else priority,
                start,
                now,
                term_expires_at=spec.expires_after.after(start) if spec.expires_after else None,
                access_ends_at=access_ends_at,
                reset=reset,
                follows_period=follows_period,
                as_of=as_of,
            )
        )
    return tuple(grant_ids)


def end_grants(conn: Connection, source: repo.SourceRow, at: datetime, now: datetime) -> None:
    """The source's grants stop paying at `at` for good (its product changed, or the
    source ended): what is left then is written off at `at`."""
    rows: list[repo.GrantRow] = []
    entries: list[PendingEntry] = []
    for row in repo.grants_of_source(conn, source.id):
        grant = row.grant
        if grant.status is GrantStatus.REVOKED:
            continue
        if grant.status is GrantStatus.EXPIRED:
            # Already written off: make its end final, so no renewal revives it.
            if row.term_expires_at != grant.expires_at:
                rows.append(replace(row, term_expires_at=grant.expires_at))
            continue
        ending = replace(grant, expires_at=earliest(grant.expires_at, at))
        settled, new_entries = settle(ending, now)
        rows.append(replace(row, grant=settled, term_expires_at=settled.expires_at))
        entries.extend(new_entries)
    repo.save_grant_terms(conn, rows)
    repo.insert_entries(conn, source.app_id, source.customer_id, entries, now)


def move_access_end(
    conn: Connection,
    source: repo.SourceRow,
    access_ends_at: datetime | None,
    now: datetime,
) -> None:
    """The source now gives access until `access_ends_at`: each grant pays until the
    sooner of that and its own expiry. A grant the old end had written off comes back
    when the new end is later (a renewal confirmed after the period ended)."""
    rows: list[repo.GrantRow] = []
    entries: list[PendingEntry] = []
    for row in repo.grants_of_source(conn, source.id):
        grant = row.grant
        target = earliest(row.term_expires_at, access_ends_at)
        if grant.status is GrantStatus.REVOKED or grant.expires_at == target:
            continue
        written_off = 0
        if grant.status is GrantStatus.EXPIRED:
            last = repo.last_entry(conn, grant.id, EntryKind.EXPIRED)
            written_off = -last if last is not None else 0
        moved, revived = extend(grant, target, written_off)
        settled, later = settle(moved, now)
        if settled != grant:
            rows.append(replace(row, grant=settled))
            entries.extend(revived)
            entries.extend(later)
    repo.save_grant_terms(conn, rows)
    repo.insert_entries(conn, source.app_id, source.customer_id, entries, now)


# --- sources --------------------------------------------------------------------------


def subscription_of(source: repo.SourceRow) -> Subscription:
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


def is_subscription(source: repo.SourceRow) -> bool:
    return source.billing_interval is not None


def pending_change_of(source: repo.SourceRow) -> PendingChange | None:
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


def _with_subscription(source: repo.SourceRow, sub: Subscription, now: datetime) -> repo.SourceRow:
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
        due_at=lifecycle.next_transition(sub) if source.provider == SANDBOX else None,
        updated_at=now,
    )


def open_subscription(
    conn: Connection,
    catalog: Catalog,
    customer: repo.CustomerRow,
    sub: Subscription,
    started_at: datetime,
    now: datetime,
    *,
    kind: str,
    provider: str,
    provider_ref: str | None = None,
    source_id: str | None = None,
    provider_state_at: datetime | None = None,
) -> repo.SourceRow:
    """A new recurring source in state `sub`, its product's grants from `started_at`."""
    product = catalog.products_by_id[sub.product_id]
    blank = repo.SourceRow(
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
    repo.insert_source(conn, source)
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
    repo.refresh_customer_due(conn, customer.id)
    return source


def update_subscription(
    conn: Connection,
    catalog: Catalog,
    source: repo.SourceRow,
    sub: Subscription,
    now: datetime,
    *,
    product_changes: list[ProductChange] | None = None,
    provider_state_at: datetime | None = None,
) -> repo.SourceRow:
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
    repo.update_source(conn, updated)
    move_access_end(conn, updated, sub.access_ends_at, now)
    repo.refresh_customer_due(conn, source.customer_id)
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
    conn: Connection, catalog: Catalog, source: repo.SourceRow, product_id: str
) -> bool:
    """Whether the grants the source's product gives now differ from those it holds."""
    product = catalog.products_by_id.get(product_id)
    # The grants of the source's current terms are the latest it was given; grants that
    # ended the instant they began (a plan changed twice at once) are not among them.
    rows = [
        row
        for row in repo.grants_of_source(conn, source.id)
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
            assert interval is not None
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
    source: repo.SourceRow,
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


# --- catching up ------------------------------------------------------------------------


def catch_up(conn: Connection, catalog: Catalog, customer_id: str, now: datetime) -> None:
    """Apply every change of the customer's sources that fell due by `now`: the sandbox
    renewing its subscriptions, trials ending, scheduled plan changes and cancellations.

    Each happens at its own instant in the past, so the result is the same whenever it
    runs; the caller runs it when `customers.due_at` has passed, before anything reads
    or spends a balance.
    """
    for source in repo.sources_due(conn, customer_id, now):
        if source.provider == SANDBOX and is_subscription(source):
            sub, changes = lifecycle.advance(subscription_of(source), now)
            update_subscription(conn, catalog, source, sub, now, product_changes=changes)
        else:
            repo.update_source(conn, replace(source, due_at=None, updated_at=now))
    repo.refresh_customer_due(conn, customer_id)
