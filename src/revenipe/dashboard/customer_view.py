"""What the customer page shows, read in one snapshot.

Balances come from `services.customers.build_state`, the function behind the API's
`GET /v1/customers/{external_id}`, over the same rows, so the page and the API never
disagree. Around them: each grant's period (settled to now by the engine, as every
operation does), and the burn-down of the current period, walked back from the
balance now through the ledger, lazy resets and expiries included (their entries are
written only when the grant is next touched; `settle` says what they will be).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from revenipe.catalog import Catalog
from revenipe.dashboard.charts import Chart, Series, line_chart
from revenipe.dashboard.format import Formatter
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.grants import EntryKind, Grant, settle
from revenipe.services import customers as customer_service
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerState
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import sources as source_store
from revenipe.storage.sources import SourceRow

CHART_POINTS = 400
"""Spans a burn-down chart's ledger is summed in (per grant)."""
SUMMED = "summed"
"""The kind of a timeline entry that stands for the entries of one span."""
PERIOD_START = "period start"
"""The kind of a timeline entry that starts a grant's period (`granted` or `reset`)."""
"""Ledger entries read for the burn-down at most (newest first); a period with more is
drawn from the oldest one read."""
DEFAULT_SPAN = timedelta(days=30)
"""The chart's span for balances that never reset."""


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    grant_id: str
    entitlement_id: str
    kind: str
    amount: int
    balance_after: int
    effective_at: datetime
    pending: bool
    """Decided by `settle` and not written yet (a lazy reset or expiry)."""


@dataclass(frozen=True, slots=True)
class GrantView:
    grant: Grant
    """Settled to now."""
    source: SourceRow | None
    source_label: str
    granted_this_period: int
    """The balance the current period started with (refill plus rollover), or the
    amount granted when it never resets."""

    @property
    def next_reset(self) -> datetime | None:
        return self.grant.period_end


@dataclass(frozen=True, slots=True)
class BalanceView:
    """A usage key, or an entitlement, with the grants that feed it."""

    id: str
    name: str
    kind: str
    """"usage key", "metered" or "boolean"."""
    remaining: int
    grants: tuple[GrantView, ...]
    entitlement_ids: tuple[str, ...]

    @property
    def granted_this_period(self) -> int:
        return sum(g.granted_this_period for g in self.grants)

    @property
    def next_reset(self) -> datetime | None:
        resets = [g.next_reset for g in self.grants if g.next_reset is not None]
        return min(resets) if resets else None

    @property
    def expires_at(self) -> datetime | None:
        """When the last of its grants expires; None if one never does."""
        ends = [g.grant.expires_at for g in self.grants]
        if not ends or any(end is None for end in ends):
            return None
        return max(end for end in ends if end is not None)


@dataclass
class CustomerView:
    state: CustomerState
    """As the API computes it."""
    catalog: Catalog
    now: datetime
    balances: list[BalanceView]
    sources: list[SourceRow]
    """Every access source, ended ones too, newest first."""
    timeline: list[TimelineEntry] = field(default_factory=list)

    def burn_down(self, balance: BalanceView, fmt: Formatter) -> Chart:
        return burn_down_chart(balance, self.timeline, self.now, fmt)


def load_customer(ctx: ServiceContext, app_id: str, customer_id: str) -> CustomerView:
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        customer = customer_store.find_customer(conn, app.id, customer_id=customer_id)
        if customer is None:
            raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
        due = customer.due_at is not None and customer.due_at <= ctx.now_for(app)
    if due:  # as `customer_state` does: a change that is due is applied first
        customer_service.catch_up(ctx, app_id, customer.id)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        customer = customer_store.find_customer(conn, app.id, customer_id=customer_id)
        if customer is None:
            raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
        catalog = ctx.catalog(conn, app)
        grant_rows = grant_store.list_active_grants(conn, customer.id)
        sources = source_store.list_sources(conn, customer.id)
        state = customer_service.build_state(customer, catalog, grant_rows, sources, now)
        # The charts' span: back to the earliest current period (or DEFAULT_SPAN), drawn
        # from the ledger summed in CHART_POINTS spans per grant, however long the
        # history; the entries that start periods, one by one.
        since = _chart_start(grant_rows, now)
        seconds = max(1, int((now - since).total_seconds()) // CHART_POINTS + 1)
        sums = ledger_store.list_customer_entry_sums(
            conn, customer.id, since=since, seconds=seconds
        )
        known = {row.grant.id: row.grant.entitlement_id for row in grant_rows}
        missing = {e.grant_id for e in sums} - known.keys()
        ended = grant_store.map_grants_by_id(conn, sorted(missing)) if missing else {}
    entitlement_of = {**known, **{gid: row.grant.entitlement_id for gid, row in ended.items()}}
    timeline = _timeline(sums, grant_rows, now, entitlement_of)
    settled = [
        (grant, row.entitlement_type)
        for row in grant_rows
        if (grant := settle(row.grant, now)[0]).is_usable(now)
    ]
    balances = _balances(state, catalog, settled, sources, timeline)
    return CustomerView(
        state=state,
        catalog=catalog,
        now=now,
        balances=balances,
        sources=sorted(sources, key=lambda s: (s.created_at, s.id), reverse=True),
        timeline=timeline,
    )


def _chart_start(grant_rows: Sequence[grant_store.GrantRow], now: datetime) -> datetime:
    """The earliest instant a burn-down chart of this customer draws from."""
    starts = [settle(row.grant, now)[0].period_start for row in grant_rows if row.grant.reset]
    return min([now - DEFAULT_SPAN, *starts])


def _timeline(
    sums: Sequence[ledger_store.EntrySum],
    grant_rows: Sequence[grant_store.GrantRow],
    now: datetime,
    entitlement_of: dict[str, str],
) -> list[TimelineEntry]:
    """Written entries (summed per span, but those that start a period, one by one) and
    the ones settling would write now, oldest first. A span that begins before a
    chart's own start counts whole there (one span of `CHART_POINTS` at most)."""
    timeline = [
        TimelineEntry(
            e.grant_id,
            entitlement_of.get(e.grant_id, ""),
            PERIOD_START if e.starts_period else SUMMED,
            e.amount,
            e.balance_after,
            e.last_effective_at,
            False,
        )
        for e in sums
    ]
    for row in grant_rows:
        _, pending = settle(row.grant, now)
        timeline.extend(
            TimelineEntry(
                p.grant_id,
                row.grant.entitlement_id,
                p.kind.value,
                p.amount,
                p.balance_after,
                p.effective_at,
                True,
            )
            for p in pending
        )
    timeline.sort(key=lambda e: (e.effective_at, e.pending))
    return timeline


def _balances(
    state: CustomerState,
    catalog: Catalog,
    settled: Sequence[tuple[Grant, str]],
    sources: Sequence[SourceRow],
    timeline: Sequence[TimelineEntry],
) -> list[BalanceView]:
    source_by_id = {s.id: s for s in sources}
    by_entitlement: dict[str, list[GrantView]] = defaultdict(list)
    kinds: dict[str, str] = {}
    for grant, kind in settled:
        kinds[grant.entitlement_id] = kind
        source = source_by_id.get(grant.source_id)
        by_entitlement[grant.entitlement_id].append(
            GrantView(
                grant=grant,
                source=source,
                source_label=_source_label(source, catalog),
                granted_this_period=_granted_this_period(grant, timeline),
            )
        )
    remaining_of: dict[str, int] = defaultdict(int)
    for entitlement in state.entitlements:
        remaining_of[entitlement.entitlement_id] += entitlement.remaining
    balances = []
    for key in state.usage_keys:
        usage_key = catalog.usage_keys_by_id.get(key.key_id)
        ids = tuple(usage_key.entitlement_ids) if usage_key is not None else ()
        grants = tuple(g for eid in ids for g in by_entitlement.get(eid, ()))
        balances.append(BalanceView(key.key_id, key.name, "usage key", key.remaining, grants, ids))
    names = {e.id: e.name for e in catalog.entitlements}
    for entitlement_id in sorted(by_entitlement):
        kind = kinds[entitlement_id]
        balances.append(
            BalanceView(
                entitlement_id,
                names.get(entitlement_id) or entitlement_id,
                kind,
                remaining_of[entitlement_id],
                tuple(by_entitlement[entitlement_id]),
                (entitlement_id,),
            )
        )
    return balances


def _source_label(source: SourceRow | None, catalog: Catalog) -> str:
    if source is None:
        return "unknown source"
    product = catalog.products_by_id.get(source.product_id) if source.product_id else None
    name = product.name if product is not None and product.name else source.product_id
    return f"{name or 'manual grant'} ({source.kind.replace('_', ' ')})"


def _granted_this_period(grant: Grant, timeline: Sequence[TimelineEntry]) -> int:
    starts = [
        e
        for e in timeline
        if e.grant_id == grant.id
        and e.kind in (PERIOD_START, EntryKind.GRANTED.value, EntryKind.RESET.value)
        and e.effective_at >= grant.period_start
    ]
    if starts:
        return starts[-1].balance_after
    return grant.amount


def burn_down_chart(
    balance: BalanceView,
    timeline: Iterable[TimelineEntry],
    now: datetime,
    fmt: Formatter,
) -> Chart:
    """The balance over its current period, drawn up to now: from the earliest start
    of its grants' current periods to the next reset (30 days back to now if none
    resets)."""
    resetting = [g.grant for g in balance.grants if g.grant.reset is not None]
    start = min(g.period_start for g in resetting) if resetting else now - DEFAULT_SPAN
    ends = [end for g in resetting if (end := g.period_end) is not None]
    end = min(ends) if ends else now
    # Every grant of its entitlements, ended ones too: their write-offs are history.
    relevant = [e for e in timeline if e.entitlement_id in balance.entitlement_ids]
    points: list[tuple[datetime, int]] = [(now, balance.remaining)]
    total = balance.remaining
    for entry in reversed(relevant):
        if entry.effective_at < start:
            break
        points.append((entry.effective_at, total))
        total -= entry.amount
    points.append((start, max(total, 0)))
    points.reverse()
    span = "this period" if resetting else "the last 30 days"
    title = f"{balance.name}: remaining, {span}"
    description = (
        f"{balance.name} from {fmt.number(points[0][1])} at {fmt.time(start)} "
        f"to {fmt.number(balance.remaining)} now."
    )
    return line_chart(
        title,
        [Series(balance.name, points)],
        fmt,
        start=start,
        end=max(end, now),
        until=now,
        y_label="remaining",
        step=True,
        description=description,
    )
