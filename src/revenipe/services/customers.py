"""Customers, their access sources and grants, and their state as clients see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection

from revenipe.catalog import Catalog, EntitlementType, Product, ProductType
from revenipe.engine.amounts import MAX_EXTERNAL_ID_LENGTH, require_amount, require_text
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.grants import Grant, settle
from revenipe.engine.periods import period_index, period_start, require_utc
from revenipe.engine.sources import MANAGED_PROVIDERS, Provider
from revenipe.engine.subscriptions import PendingChange
from revenipe.services import access
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import apps as app_store
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import sources as source_store

MAX_PRIORITY = 1_000_000
"""Providers whose subscriptions customers change through this server (not the stores)."""


class SourceKind(StrEnum):
    DEFAULT = "default"
    """A default product, granted when the customer was created."""
    MANUAL = "manual"
    """Granted by the app (CLI, server API, embedded API)."""
    SUBSCRIPTION = "subscription"
    PURCHASE = "purchase"


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """A customer named by our internal id or by the app's external identity."""

    customer_id: str | None = None
    external_id: str | None = None

    def __post_init__(self) -> None:
        if (self.customer_id is None) == (self.external_id is None):
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT,
                "name a customer by exactly one of customer_id, external_id",
            )

    @classmethod
    def internal(cls, customer_id: str) -> CustomerRef:
        return cls(customer_id=require_text(customer_id, field="client_id", max_length=64))

    @classmethod
    def external(cls, external_id: str) -> CustomerRef:
        return cls(
            external_id=require_text(
                external_id, field="customer", max_length=MAX_EXTERNAL_ID_LENGTH
            )
        )


def locked_customer(
    ctx: ServiceContext,
    conn: Connection,
    app: app_store.AppRow,
    ref: CustomerRef,
    *,
    create: bool,
    now: datetime,
    anonymous: bool = False,
) -> customer_store.CustomerRow:
    """The customer, row-locked for this transaction; created (with defaults) if asked.

    Only external identities can create: an unknown internal id is an error.
    """
    customer = customer_store.find_customer(
        conn, app.id, customer_id=ref.customer_id, external_id=ref.external_id, lock=True
    )
    if customer is not None:
        if customer.due_at is not None and customer.due_at <= now:
            access.catch_up(conn, ctx.catalog(conn, app), customer.id, now)
        return customer
    if not create or ref.external_id is None:
        raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
    row = customer_store.CustomerRow(new_id("cus"), app.id, ref.external_id, anonymous, now)
    if customer_store.insert_customer_if_new(conn, row):
        catalog = ctx.catalog(conn, app)
        for product in catalog.default_products:
            grant_product_in(conn, app.id, row.id, catalog, product, now, kind=SourceKind.DEFAULT)
    customer = customer_store.find_customer(conn, app.id, external_id=ref.external_id, lock=True)
    if customer is None:
        raise InvariantViolation(f"customer {ref.external_id!r} not found right after its insert")
    return customer


def ensure_customer(
    ctx: ServiceContext, app_id: str, external_id: str, *, anonymous: bool = False
) -> customer_store.CustomerRow:
    """Log in: the customer for this external identity, created with defaults if new.

    `anonymous` marks a customer created by a token-less anonymous login (see the
    server's token policy); it has no effect on an existing customer.
    """
    ref = CustomerRef.external(external_id)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        found = customer_store.find_customer(conn, app.id, external_id=ref.external_id)
    if found is not None:
        return found
    with ctx.db.write() as conn:
        return locked_customer(
            ctx, conn, app, ref, create=True, now=ctx.now_for(app), anonymous=anonymous
        )


def catch_up(ctx: ServiceContext, app_id: str, customer_id: str) -> None:
    """Apply what fell due on the customer's sources (see `access.catch_up`), in a write
    transaction of its own: for reads that found `due_at` passed."""
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        locked_customer(
            ctx, conn, app, CustomerRef(customer_id=customer_id), create=False, now=ctx.now_for(app)
        )


def find_customer(ctx: ServiceContext, app_id: str, ref: CustomerRef) -> customer_store.CustomerRow:
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        customer = customer_store.find_customer(
            conn, app_id, customer_id=ref.customer_id, external_id=ref.external_id
        )
    if customer is None:
        raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
    return customer


def list_customers(
    ctx: ServiceContext, app_id: str, *, after_id: str | None = None, limit: int = 100
) -> list[customer_store.CustomerRow]:
    """Customers in id order (creation order); page with `after_id`."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        return customer_store.list_customers(conn, app_id, after_id=after_id, limit=limit)


# --- granting ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantedSource:
    customer_id: str
    access_source_id: str
    grant_ids: tuple[str, ...]


def grant_product_in(
    conn: Connection,
    app_id: str,
    customer_id: str,
    catalog: Catalog,
    product: Product,
    now: datetime,
    *,
    kind: SourceKind,
    expires_at: datetime | None = None,
    priority: int | None = None,
) -> GrantedSource:
    """Give `product` to the customer: one access source, one grant per product grant.

    A default or manual grant of a subscription product renews for as long as it lasts
    (no payment to wait for); `expires_at` ends it.
    """
    interval = product.recurring_interval
    source = source_store.SourceRow(
        id=new_id("src"),
        app_id=app_id,
        customer_id=customer_id,
        product_id=product.id,
        kind=kind.value,
        provider=Provider.REVENIPE,
        status="active",
        started_at=now,
        current_period_start=now if interval else None,
        current_period_end=period_start(now, interval, 1) if interval else None,
        expires_at=expires_at,
        cancel_at_period_end=False,
        canceled_at=None,
        created_at=now,
    )
    source_store.insert_source(conn, source)
    outbound_emit.source_changed(conn, None, source, now)
    grant_ids = access.grant_product(
        conn,
        app_id,
        customer_id,
        source.id,
        catalog,
        product,
        now,
        now,
        access_ends_at=expires_at,
        priority=priority,
    )
    outbound_emit.balances_changed(conn, catalog, app_id, customer_id, now)
    return GrantedSource(customer_id, source.id, grant_ids)


def _check_priority(priority: int | None) -> int | None:
    if priority is None:
        return None
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not (-MAX_PRIORITY <= priority <= MAX_PRIORITY)
    ):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"priority must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}",
            field="priority",
        )
    return priority


def grant_product(
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    product_id: str,
    *,
    expires_at: datetime | None = None,
    priority: int | None = None,
) -> GrantedSource:
    """Manually give a catalog product to a customer (created if new, by external id)."""
    priority = _check_priority(priority)
    if expires_at is not None:
        expires_at = require_utc(expires_at, field="expires_at")
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        catalog = ctx.catalog(conn, app)
        product = catalog.products_by_id.get(product_id) if isinstance(product_id, str) else None
        if product is None:
            raise RevenipeError(
                ErrorCode.PRODUCT_NOT_FOUND,
                f"no product {product_id!r} in the app's catalog",
                field="product",
            )
        customer = locked_customer(ctx, conn, app, ref, create=True, now=now)
        return grant_product_in(
            conn,
            app.id,
            customer.id,
            catalog,
            product,
            now,
            kind=SourceKind.MANUAL,
            expires_at=expires_at,
            priority=priority,
        )


def grant_entitlement(
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    entitlement_id: str,
    amount: int | None,
    *,
    expires_at: datetime | None = None,
    priority: int | None = None,
) -> GrantedSource:
    """Manually give an amount of a metered entitlement (or a boolean one, no amount)."""
    priority = _check_priority(priority)
    if expires_at is not None:
        expires_at = require_utc(expires_at, field="expires_at")
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        catalog = ctx.catalog(conn, app)
        entitlement = (
            catalog.entitlements_by_id.get(entitlement_id)
            if isinstance(entitlement_id, str)
            else None
        )
        if entitlement is None:
            raise RevenipeError(
                ErrorCode.ENTITLEMENT_NOT_FOUND,
                f"no entitlement {entitlement_id!r} in the app's catalog",
                field="entitlement",
            )
        if entitlement.type is EntitlementType.METERED:
            amount = require_amount(amount, field="amount")
        elif amount is not None:
            raise RevenipeError(
                ErrorCode.INVALID_VALUE,
                f"{entitlement.id!r} is a boolean entitlement: it takes no amount",
                field="amount",
            )
        customer = locked_customer(ctx, conn, app, ref, create=True, now=now)
        source = source_store.SourceRow(
            id=new_id("src"),
            app_id=app.id,
            customer_id=customer.id,
            product_id=None,
            kind=SourceKind.MANUAL.value,
            provider=Provider.REVENIPE,
            status="active",
            started_at=now,
            current_period_start=None,
            current_period_end=None,
            expires_at=expires_at,
            cancel_at_period_end=False,
            canceled_at=None,
            created_at=now,
        )
        source_store.insert_source(conn, source)
        outbound_emit.source_changed(conn, None, source, now)
        grant_id = access.insert_grant(
            conn,
            app.id,
            customer.id,
            source.id,
            entitlement.id,
            entitlement.type,
            amount or 0,
            0 if priority is None else priority,
            now,
            now,
            access_ends_at=expires_at,
        )
        outbound_emit.balances_changed(conn, catalog, app.id, customer.id, now)
        return GrantedSource(customer.id, source.id, (grant_id,))


# --- state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntitlementState:
    entitlement_id: str
    access_source_id: str
    type: str
    remaining: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class UsageKeyState:
    key_id: str
    name: str
    remaining: int


@dataclass(frozen=True, slots=True)
class SourceState:
    source: source_store.SourceRow
    product: Product | None
    period_start: datetime | None
    period_end: datetime | None

    @property
    def pending_change(self) -> PendingChange | None:
        return access.pending_change_of(self.source)

    @property
    def can_cancel(self) -> bool:
        """Whether the customer may cancel it here (a subscription bought through this
        server's providers, not set to cancel already)."""
        return (
            self.source.kind == SourceKind.SUBSCRIPTION.value
            and self.source.provider in MANAGED_PROVIDERS
            and not self.source.cancel_at_period_end
        )


@dataclass(frozen=True, slots=True)
class CustomerState:
    """Everything a client shows: what the customer holds, as of `as_of`."""

    customer: customer_store.CustomerRow
    entitlements: tuple[EntitlementState, ...]
    usage_keys: tuple[UsageKeyState, ...]
    sources: tuple[SourceState, ...]
    as_of: datetime

    def subscriptions(self) -> list[SourceState]:
        return [
            s
            for s in self.sources
            if s.product is not None and s.product.type is ProductType.SUBSCRIPTION
        ]

    def add_ons(self) -> list[SourceState]:
        return [
            s
            for s in self.sources
            if s.product is not None and s.product.type is ProductType.ADD_ON
        ]


def customer_state(ctx: ServiceContext, app_id: str, ref: CustomerRef) -> CustomerState:
    """The customer's balances and sources as of now, computed from the timeline.

    When one of its sources has a change due (a sandbox renewal, a scheduled plan
    change), that change is applied first, in a write transaction of its own.
    """
    for attempt in range(3):
        with ctx.db.read() as conn:
            app = ctx.require_app(conn, app_id)
            now = ctx.now_for(app)
            customer = customer_store.find_customer(
                conn, app.id, customer_id=ref.customer_id, external_id=ref.external_id
            )
            if customer is None:
                raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
            if attempt == 2 or customer.due_at is None or customer.due_at > now:
                catalog = ctx.catalog(conn, app)
                grant_rows = grant_store.list_active_grants(conn, customer.id)
                sources = source_store.list_sources(conn, customer.id)
                return build_state(customer, catalog, grant_rows, sources, now)
        catch_up(ctx, app_id, customer.id)
    raise InvariantViolation("customer_state: the third attempt always returns")


def build_state(
    customer: customer_store.CustomerRow,
    catalog: Catalog,
    grant_rows: list[grant_store.GrantRow],
    sources: list[source_store.SourceRow],
    now: datetime,
) -> CustomerState:
    usable: list[tuple[Grant, str]] = []
    for row in grant_rows:
        settled, _ = settle(row.grant, now)
        if settled.is_usable(now):
            usable.append((settled, row.entitlement_type))
    usable.sort(key=lambda item: (item[0].created_at, item[0].id))
    entitlements = tuple(
        EntitlementState(
            entitlement_id=g.entitlement_id,
            access_source_id=g.source_id,
            type=kind,
            remaining=g.balance if kind == EntitlementType.METERED.value else 1,
            expires_at=g.expires_at,
        )
        for g, kind in usable
    )
    usage_keys = tuple(
        UsageKeyState(
            key.id,
            key.name,
            sum(g.balance for g, _ in usable if g.entitlement_id in key.entitlement_ids),
        )
        for key in catalog.usage_keys
    )
    live_sources = {g.source_id for g, _ in usable}
    source_states = []
    for source in sources:
        if source.status not in ("active", "trialing", "past_due") or (
            source.expires_at is not None and source.expires_at <= now
        ):
            continue
        if source.product_id is None and source.id not in live_sources:
            continue
        product = catalog.products_by_id.get(source.product_id) if source.product_id else None
        start = end = None
        if access.is_subscription(source):
            start, end = source.current_period_start, source.current_period_end
        elif source.current_period_start is not None and product and product.recurring_interval:
            interval = product.recurring_interval
            index = period_index(source.started_at, interval, now)
            start = period_start(source.started_at, interval, index)
            end = period_start(source.started_at, interval, index + 1)
        source_states.append(SourceState(source, product, start, end))
    return CustomerState(customer, entitlements, usage_keys, tuple(source_states), now)
