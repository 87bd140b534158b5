"""The embedded API: the Revenipe engine in your own Python process, no HTTP.

    import revenipe

    backend = revenipe.open("sqlite:///./revenipe.db")      # or postgresql://...
    created = backend.create_app("My app", catalog=revenipe.load_catalog(text))
    app = backend.app(created.app.id)
    result = app.track("user-42", "credits", 1)
    if result.success:
        ...  # allow the action; show result.remaining

Every method is one transaction; the same semantics as the server. Customers are named
by the app's external identity (what your app calls the user); a customer named for
the first time by `track`, `grant_product` or `grant_entitlement` is created with the
catalog's default products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from revenipe.catalog import Catalog
from revenipe.catalog.loader import catalog_from_file
from revenipe.services import apps as app_service
from revenipe.services import catalogs as catalog_service
from revenipe.services import customers as customer_service
from revenipe.services.context import ServiceContext, utc_now
from revenipe.services.customers import CustomerRef, CustomerState, GrantedSource
from revenipe.services.usage import batch as batch_service
from revenipe.services.usage import reservations as reservation_service
from revenipe.services.usage import reversal as reversal_service
from revenipe.services.usage import track as usage_service
from revenipe.services.usage import verify as verify_service
from revenipe.services.usage.batch import BatchItem, BatchOutcome
from revenipe.services.usage.reservations import CloseResult, HoldResult
from revenipe.services.usage.reversal import ReversalResult
from revenipe.services.usage.track import CheckResult, TrackResult
from revenipe.storage import apps as app_store
from revenipe.storage.database import DEFAULT_DATABASE_URL, Database, open_database
from revenipe.storage.reservations import ReservationRow


class Backend:
    """An opened Revenipe database. Thread-safe; open one per process and share it."""

    def __init__(self, database: Database, clock: Callable[[], datetime] = utc_now) -> None:
        self.context = ServiceContext(db=database, clock=clock)

    @property
    def database(self) -> Database:
        return self.context.db

    def create_app(
        self,
        name: str,
        catalog: Catalog | None = None,
        *,
        sandbox: bool = False,
        return_urls: Sequence[str] = (),
    ) -> app_service.CreatedApp:
        """Create an app (tenant). The returned secret key is shown only once.

        A `sandbox` app sells through the built-in sandbox provider and has a test clock;
        `return_urls` are the purchase return URLs it accepts (exact, or `prefix*`).
        """
        return app_service.create_app(
            self.context, name, catalog, sandbox=sandbox, return_urls=return_urls
        )

    def list_apps(self) -> list[app_store.AppRow]:
        return app_service.list_apps(self.context)

    def app(self, app_id: str) -> App:
        """Operations scoped to one app (checked to exist)."""
        app_service.get_app(self.context, app_id)
        return App(self.context, app_id)

    def verify(self, app_id: str | None = None) -> verify_service.VerifyReport:
        """Check every ledger invariant (of one app, or of all)."""
        return verify_service.verify(self.context, app_id)

    def close(self) -> None:
        self.context.db.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class App:
    """One app's customers, grants and usage. Customers are named by external id."""

    def __init__(self, context: ServiceContext, app_id: str) -> None:
        self.context = context
        self.app_id = app_id

    def apply_catalog(self, catalog: Catalog | str | Path) -> catalog_service.AppliedCatalog:
        """Apply a catalog (a `Catalog`, or the path of a YAML file) as the new version."""
        if not isinstance(catalog, Catalog):
            catalog = catalog_from_file(catalog)
        return catalog_service.apply_catalog(self.context, self.app_id, catalog)

    def catalog(self) -> Catalog:
        return catalog_service.get_catalog(self.context, self.app_id)[1]

    def login(self, external_id: str) -> str:
        """The internal customer id for `external_id`, creating the customer if new."""
        return customer_service.ensure_customer(self.context, self.app_id, external_id).id

    def track(
        self,
        customer: str,
        id: str,
        value: int,
        *,
        access_source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> TrackResult:
        """Consume `value` of entitlement or usage key `id` (docs/concepts/track.md)."""
        return usage_service.track(
            self.context,
            self.app_id,
            CustomerRef.external(customer),
            id,
            value,
            access_source_id=access_source_id,
            idempotency_key=idempotency_key,
            create_customer=True,
        )

    def track_batch(self, items: Sequence[BatchItem]) -> list[BatchOutcome]:
        """Many tracks at once, each decided as `track` would decide it alone, answered in
        order (a result or that item's error); every item needs an idempotency key, so
        a retried batch charges nothing twice (docs/concepts/track.md#batch-track)."""
        return batch_service.track_batch(self.context, self.app_id, items)

    def check(
        self, customer: str, id: str, value: int, *, access_source_id: str | None = None
    ) -> CheckResult:
        """Dry run of `track`: would it succeed, and which grants would pay how much."""
        return usage_service.check(
            self.context,
            self.app_id,
            CustomerRef.external(customer),
            id,
            value,
            access_source_id=access_source_id,
        )

    def reverse(
        self, usage_event_id: str, amount: int | None = None, *, idempotency_key: str | None = None
    ) -> ReversalResult:
        """Give back what a usage event consumed (all that is left, or `amount`)."""
        return reversal_service.reverse(
            self.context, self.app_id, usage_event_id, amount, idempotency_key=idempotency_key
        )

    def reserve(
        self,
        customer: str,
        id: str,
        value: int,
        *,
        ttl_seconds: int | None = None,
        access_source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> HoldResult:
        """Hold `value` of `id` until settled, released or `ttl_seconds` (default 600)
        pass (docs/concepts/reservations.md). All or nothing, like a track."""
        return reservation_service.hold(
            self.context,
            self.app_id,
            CustomerRef.external(customer),
            id,
            value,
            ttl_seconds=ttl_seconds,
            access_source_id=access_source_id,
            idempotency_key=idempotency_key,
            create_customer=True,
        )

    def settle(self, reservation_id: str, value: int) -> CloseResult:
        """Consume the actual amount of a hold (0 releases it); the rest goes back."""
        return reservation_service.settle_reservation(
            self.context, self.app_id, reservation_id, value
        )

    def release(self, reservation_id: str) -> CloseResult:
        """Give a whole hold back."""
        return reservation_service.release_reservation(self.context, self.app_id, reservation_id)

    def reservation(self, reservation_id: str) -> ReservationRow:
        """A reservation as of now (`state`: held, settled, released or expired)."""
        return reservation_service.get_reservation(self.context, self.app_id, reservation_id)

    def grant_product(
        self,
        customer: str,
        product_id: str,
        *,
        expires_at: datetime | None = None,
        priority: int | None = None,
    ) -> GrantedSource:
        """Give a catalog product to a customer (a new access source)."""
        return customer_service.grant_product(
            self.context,
            self.app_id,
            CustomerRef.external(customer),
            product_id,
            expires_at=expires_at,
            priority=priority,
        )

    def grant_entitlement(
        self,
        customer: str,
        entitlement_id: str,
        amount: int | None = None,
        *,
        expires_at: datetime | None = None,
        priority: int | None = None,
    ) -> GrantedSource:
        """Give an amount of a metered entitlement (no amount for a boolean one)."""
        return customer_service.grant_entitlement(
            self.context,
            self.app_id,
            CustomerRef.external(customer),
            entitlement_id,
            amount,
            expires_at=expires_at,
            priority=priority,
        )

    def state(self, customer: str) -> CustomerState:
        """The customer's entitlements, usage keys and sources as of now."""
        return customer_service.customer_state(
            self.context, self.app_id, CustomerRef.external(customer)
        )


def open(
    url: str = DEFAULT_DATABASE_URL,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> Backend:
    """Open (creating and migrating if needed) the database at `url` as a `Backend`."""
    return Backend(open_database(url), clock=clock)
