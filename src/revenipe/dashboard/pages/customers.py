"""Customers: the list (search by external or internal id), a customer's page, its
actions (each the service the API calls), and CSV exports of its history."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import StreamingResponse

from revenipe.dashboard import auth
from revenipe.dashboard.csv_export import csv_rows
from revenipe.dashboard.customer_view import load_customer
from revenipe.dashboard.format import Formatter
from revenipe.dashboard.page import Page, app_page, show
from revenipe.dashboard.paging import PAGE_SIZE, link, page_links, split_page
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services import customers as customer_service
from revenipe.services import tokens as token_service
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef
from revenipe.services.purchases import orders as purchase_service
from revenipe.services.usage import history as history_service
from revenipe.services.usage import reversal as reversal_service
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import usage_events as usage_store
from revenipe.storage.customers import CustomerRow
from revenipe.storage.ledger import LedgerEntryRow
from revenipe.storage.usage_events import UsageEventRow

Field = Annotated[str, Form()]
HISTORY_PAGE = 20
EXPORT_BATCH = 1000
MAX_QUERY_LENGTH = 256


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _list_routes(router, ctx)
    _customer_routes(router, ctx)
    _grant_routes(router, ctx)
    _action_routes(router, ctx)
    _export_routes(router, ctx)
    return router


# -- the list ----------------------------------------------------------------------------


def _list_routes(router: APIRouter, ctx: ServiceContext) -> None:
    @router.get("/apps/{app_id}/customers")
    def customers(request: Request, app_id: str, q: str = "", after: str = "") -> Response:
        page = app_page(ctx, request, app_id, section="customers", title="Customers")
        query = q.strip()[:MAX_QUERY_LENGTH]
        exact, rows, more = _search(ctx, app_id, query, after or None)
        last_key = None
        if rows:
            last_key = rows[-1].external_id if query else rows[-1].id
        links = page_links(
            page.url("customers"), {"q": query}, after=after or None, last_key=last_key, more=more
        )
        return show("customers.html", page, query=query, exact=exact, rows=rows, links=links)


def _search(
    ctx: ServiceContext, app_id: str, query: str, after: str | None
) -> tuple[list[CustomerRow], list[CustomerRow], bool]:
    """(exact matches, a page of the list, whether more follow). Without a query: every
    customer in id order; with one: exact matches of either id, then external ids
    starting with it. Each an index lookup or range: fast at any number of customers."""
    if not query:
        rows = customer_service.list_customers(ctx, app_id, after_id=after, limit=PAGE_SIZE + 1)
        page, more = split_page(rows, PAGE_SIZE)
        return [], page, more
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        exact: list[CustomerRow] = []
        if after is None:
            by_id = customer_store.find_customer(conn, app_id, customer_id=query)
            by_external = customer_store.find_customer(conn, app_id, external_id=query)
            exact = [row for row in (by_id, by_external) if row is not None]
        rows = customer_store.list_customers_by_external_prefix(
            conn, app_id, query, after=after, limit=PAGE_SIZE + 1
        )
    page, more = split_page(rows, PAGE_SIZE)
    exact_ids = {row.id for row in exact}
    return exact, [row for row in page if row.id not in exact_ids], more


# -- one customer ----------------------------------------------------------------------


class HistoryFilter:
    """The filters of a customer's usage events and ledger entries (query parameters)."""

    def __init__(self, fmt: Formatter, key: str, since: str, until: str) -> None:
        self.key = key.strip()[:64]
        self.since_day = fmt.parse_day(since)
        self.until_day = fmt.parse_day(until)
        self.since = fmt.day_start(self.since_day) if self.since_day else None
        self.until = fmt.day_start(self.until_day + timedelta(days=1)) if self.until_day else None

    @property
    def params(self) -> dict[str, str | int | None]:
        return {
            "key": self.key,
            "since": self.since_day.isoformat() if self.since_day else None,
            "until": self.until_day.isoformat() if self.until_day else None,
        }


def _customer_routes(router: APIRouter, ctx: ServiceContext) -> None:
    @router.get("/apps/{app_id}/customers/{customer_id}")
    def customer(
        request: Request,
        app_id: str,
        customer_id: str,
        key: str = "",
        since: str = "",
        until: str = "",
        events_before: str = "",
        entries_before: str = "",
    ) -> Response:
        page = app_page(ctx, request, app_id, section="customers", title="Customer")
        view = load_customer(ctx, app_id, customer_id)
        filters = HistoryFilter(page.fmt, key, since, until)
        events, more_events = _events(ctx, app_id, customer_id, filters, events_before or None)
        entries, more_entries, entitlement_of = _entries(
            ctx, app_id, customer_id, filters, _int_or_none(entries_before)
        )
        path = page.url(f"customers/{customer_id}")
        charts = [
            (balance, view.burn_down(balance, page.fmt))
            for balance in view.balances
            if balance.kind != "boolean"
        ]
        return show(
            "customer.html",
            page,
            view=view,
            customer=view.state.customer,
            charts=charts,
            catalog=view.catalog,
            filters=filters,
            events=events,
            entries=entries,
            entitlement_of=entitlement_of,
            event_links=page_links(
                path,
                filters.params,
                after=events_before or None,
                last_key=events[-1].id if events else None,
                more=more_events,
                cursor="events_before",
            ),
            entry_links=page_links(
                path,
                filters.params,
                after=entries_before or None,
                last_key=str(entries[-1].id) if entries else None,
                more=more_entries,
                cursor="entries_before",
            ),
            export_query=link("", filters.params),
        )


def _int_or_none(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < 2**63 else None


def _events(
    ctx: ServiceContext, app_id: str, customer_id: str, filters: HistoryFilter, before: str | None
) -> tuple[list[UsageEventRow], bool]:
    rows = history_service.usage_history(
        ctx,
        app_id,
        customer=CustomerRef.internal(customer_id),
        tracked_id=filters.key or None,
        since=filters.since,
        until=filters.until,
        before_id=before,
        limit=HISTORY_PAGE + 1,
    )
    return split_page(rows, HISTORY_PAGE)


def _entries(
    ctx: ServiceContext,
    app_id: str,
    customer_id: str,
    filters: HistoryFilter,
    before: int | None,
    limit: int = HISTORY_PAGE,
) -> tuple[list[LedgerEntryRow], bool, dict[str, str]]:
    """A page of the customer's ledger, newest first, and the entitlement of each grant
    on it."""
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        customer = customer_store.find_customer(conn, app.id, customer_id=customer_id)
        if customer is None:
            raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
        entitlement_ids = None
        if filters.key:
            usage_key = ctx.catalog(conn, app).usage_keys_by_id.get(filters.key)
            entitlement_ids = usage_key.entitlement_ids if usage_key else (filters.key,)
        rows = ledger_store.list_customer_entries(
            conn,
            customer.id,
            entitlement_ids=entitlement_ids,
            since=filters.since,
            until=filters.until,
            before_id=before,
            limit=limit + 1,
        )
        page, more = split_page(rows, limit)
        grants = grant_store.map_grants_by_id(conn, sorted({e.grant_id for e in page}))
    return page, more, {gid: row.grant.entitlement_id for gid, row in grants.items()}


# -- actions: each the service the API calls -----------------------------------------------


def _grant_routes(router: APIRouter, ctx: ServiceContext) -> None:
    base = "/apps/{app_id}/customers/{customer_id}"

    @router.post(base + "/grant-credits")
    def grant_credits(
        request: Request,
        app_id: str,
        customer_id: str,
        entitlement_id: Field = "",
        amount: Field = "",
        csrf_token: Field = "",
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            units = _positive_int(amount, "amount")
            customer_service.grant_entitlement(
                ctx, app_id, CustomerRef.internal(customer_id), entitlement_id, units
            )
            return f"Granted {units:,} {entitlement_id}."

        return _act(app_id, customer_id, act)

    @router.post(base + "/grant-product")
    def grant_product(
        request: Request,
        app_id: str,
        customer_id: str,
        product_id: Field = "",
        csrf_token: Field = "",
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            customer_service.grant_product(
                ctx, app_id, CustomerRef.internal(customer_id), product_id
            )
            return f"Granted the product {product_id}."

        return _act(app_id, customer_id, act)


def _action_routes(router: APIRouter, ctx: ServiceContext) -> None:
    base = "/apps/{app_id}/customers/{customer_id}"

    @router.post(base + "/reverse")
    def reverse(
        request: Request,
        app_id: str,
        customer_id: str,
        usage_event_id: Field = "",
        amount: Field = "",
        csrf_token: Field = "",
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            units = _positive_int(amount, "amount") if amount.strip() else None
            _require_event_of(ctx, app_id, customer_id, usage_event_id)
            result = reversal_service.reverse(ctx, app_id, usage_event_id, units)
            if result.amount == 0:
                return f"Nothing left to reverse in {usage_event_id}."
            return f"Reversed {result.amount:,} of {usage_event_id}."

        return _act(app_id, customer_id, act)

    @router.post(base + "/cancel")
    def cancel(
        request: Request,
        app_id: str,
        customer_id: str,
        source_id: Field = "",
        cancel_mode: Field = "period_end",
        csrf_token: Field = "",
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)

        def act() -> str:
            outcome = purchase_service.cancel_subscription(
                ctx, app_id, customer_id, source_id, cancel_mode
            )
            if not outcome.success:
                raise RevenipeError(
                    ErrorCode.INVALID_ARGUMENT, outcome.message or "the cancel did not go through"
                )
            if outcome.will_cancel_at_period_end:
                return f"Subscription {source_id} cancels at the end of its period."
            return f"Subscription {source_id} canceled now."

        return _act(app_id, customer_id, act)

    @router.post(base + "/token")
    def mint_token(
        request: Request,
        app_id: str,
        customer_id: str,
        ttl_seconds: Field = "3600",
        csrf_token: Field = "",
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)
        page = app_page(ctx, request, app_id, section="customers", title="Customer token")
        try:
            ttl = _positive_int(ttl_seconds, "ttl_seconds")
            customer = customer_service.find_customer(
                ctx, app_id, CustomerRef.internal(customer_id)
            )
            minted = token_service.mint_customer_token(ctx, app_id, customer.external_id, ttl)
        except RevenipeError as error:
            return auth.redirect(
                page.url(f"customers/{customer_id}"), flash=error.message, error=True
            )
        return show("token.html", page, customer=customer, minted=minted)


def _act(app_id: str, customer_id: str, act: Callable[[], str]) -> Response:
    """Run an action; back to the customer's page with what it did, or why not."""
    back = f"{Page.app_url_of(app_id)}/customers/{customer_id}"
    try:
        done = act()
    except RevenipeError as error:
        return auth.redirect(back, flash=error.message, error=True)
    return auth.redirect(back, flash=done)


def _positive_int(text: str, field: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be a whole number", field=field
        ) from None
    if value <= 0:
        raise RevenipeError(ErrorCode.INVALID_ARGUMENT, f"{field} must be positive", field=field)
    return value


def _require_event_of(ctx: ServiceContext, app_id: str, customer_id: str, event_id: str) -> None:
    """The page reverses only its customer's events (the service checks the app)."""
    with ctx.db.read() as conn:
        event = usage_store.get_usage_event(conn, app_id, event_id[:64])
    if event is None or event.customer_id != customer_id:
        raise RevenipeError(
            ErrorCode.USAGE_EVENT_NOT_FOUND, f"this customer has no usage event {event_id!r}"
        )


# -- CSV exports -----------------------------------------------------------------------


def _export_routes(router: APIRouter, ctx: ServiceContext) -> None:
    base = "/apps/{app_id}/customers/{customer_id}"

    @router.get(base + "/events.csv")
    def events_csv(
        request: Request,
        app_id: str,
        customer_id: str,
        key: str = "",
        since: str = "",
        until: str = "",
    ) -> Response:
        filtered = (key, since, until)
        return _export(ctx, request, app_id, customer_id, filtered, "usage-events", _event_rows)

    @router.get(base + "/ledger.csv")
    def ledger_csv(
        request: Request,
        app_id: str,
        customer_id: str,
        key: str = "",
        since: str = "",
        until: str = "",
    ) -> Response:
        filtered = (key, since, until)
        return _export(ctx, request, app_id, customer_id, filtered, "ledger", _entry_rows)


def _export(
    ctx: ServiceContext,
    request: Request,
    app_id: str,
    customer_id: str,
    filtered: tuple[str, str, str],
    name: str,
    rows: Callable[[ServiceContext, str, str, HistoryFilter], Iterator[list[Any]]],
) -> Response:
    """One of a customer's CSV exports, `<name>-<customer id>.csv` (`rows`: its header,
    then a row each), filtered by (key, since, until) as the customer's page filters."""
    page = app_page(ctx, request, app_id, section="customers", title="Export")
    filters = HistoryFilter(page.fmt, *filtered)
    customer_service.find_customer(ctx, app_id, CustomerRef.internal(customer_id))
    return _csv_response(f"{name}-{customer_id}.csv", rows(ctx, app_id, customer_id, filters))


def _csv_response(filename: str, rows: Iterator[list[Any]]) -> StreamingResponse:
    return StreamingResponse(
        csv_rows(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _event_rows(
    ctx: ServiceContext, app_id: str, customer_id: str, filters: HistoryFilter
) -> Iterator[list[Any]]:
    yield [
        "id", "created_at", "tracked_id", "requested", "consumed", "reversed", "remaining",
        "success", "error", "idempotency_key", "access_source_id",
    ]  # fmt: skip
    before: str | None = None
    while True:
        rows = history_service.usage_history(
            ctx,
            app_id,
            customer=CustomerRef.internal(customer_id),
            tracked_id=filters.key or None,
            since=filters.since,
            until=filters.until,
            before_id=before,
            limit=EXPORT_BATCH,
        )
        for e in rows:
            yield [
                e.id, _utc(e.created_at), e.tracked_id, e.requested, e.consumed, e.reversed,
                e.remaining, e.success, e.error, e.idempotency_key, e.access_source_id,
            ]  # fmt: skip
        if len(rows) < EXPORT_BATCH:
            return
        before = rows[-1].id


def _entry_rows(
    ctx: ServiceContext, app_id: str, customer_id: str, filters: HistoryFilter
) -> Iterator[list[Any]]:
    yield [
        "id", "effective_at", "recorded_at", "entitlement_id", "grant_id", "kind", "amount",
        "balance_after", "usage_event_id", "reversal_id", "reservation_id",
    ]  # fmt: skip
    before: int | None = None
    while True:
        rows, more, entitlement_of = _entries(
            ctx, app_id, customer_id, filters, before, limit=EXPORT_BATCH
        )
        for e in rows:
            yield [
                e.id, _utc(e.effective_at), _utc(e.recorded_at), entitlement_of.get(e.grant_id, ""),
                e.grant_id, e.kind, e.amount, e.balance_after, e.usage_event_id, e.reversal_id,
                e.reservation_id,
            ]  # fmt: skip
        if not more:
            return
        before = rows[-1].id


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
