"""Usage analytics: one usage key or entitlement, consumed per hour or per day over a
chosen range, its refusals, and its top customers. Read from the rollups
(docs/adr/0021)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response

from revenipe.dashboard.charts import BarSeries, bar_chart
from revenipe.dashboard.format import Formatter
from revenipe.dashboard.page import app_page, show
from revenipe.services import catalogs as catalog_service
from revenipe.services import rollups
from revenipe.services.context import ServiceContext

RANGES = {
    "24h": ("hour", 24, "Last 24 hours, per hour"),
    "48h": ("hour", 48, "Last 48 hours, per hour"),
    "168h": ("hour", 168, "Last 7 days, per hour"),
    "7d": ("day", 7, "Last 7 days, per day"),
    "30d": ("day", 30, "Last 30 days, per day"),
    "90d": ("day", 90, "Last 90 days, per day"),
}
"""The ranges offered: (granularity, how many hours or days, label)."""
DEFAULT_RANGE = "30d"
TRACKED_IDS_LOOKBACK = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class Choice:
    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Range:
    name: str
    granularity: str
    since: datetime
    until: datetime
    until_day: str
    """The last day shown (the operator's) as typed in the form; '' for now."""


def _range(fmt: Formatter, now: datetime, name: str, until_text: str) -> Range:
    """[since, until): hours or days ending with the current hour or day, or with the
    end of the day the operator chose."""
    name = name if name in RANGES else DEFAULT_RANGE
    granularity, count, _ = RANGES[name]
    chosen = fmt.parse_day(until_text)
    today = fmt.local(now).date()
    if chosen is not None and chosen >= today:
        chosen = None
    if granularity == "hour":
        if chosen is None:
            until = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            until += timedelta(hours=1)
        else:
            until = fmt.day_start(chosen + timedelta(days=1))
        since = until - timedelta(hours=count)
    else:
        last = chosen or today
        until = fmt.day_start(last + timedelta(days=1))
        since = fmt.day_start(last - timedelta(days=count - 1))
    return Range(name, granularity, since, until, chosen.isoformat() if chosen else "")


def _choices(ctx: ServiceContext, app_id: str, tracked: list[str]) -> list[Choice]:
    """The catalog's usage keys and metered entitlements, then any other id tracked."""
    _, catalog = catalog_service.get_catalog(ctx, app_id)
    choices = [Choice(k.id, f"{k.name} (usage key)") for k in catalog.usage_keys]
    choices += [
        Choice(e.id, f"{e.name} (entitlement)")
        for e in catalog.entitlements
        if e.type.value == "metered"
    ]
    known = {c.id for c in choices}
    for tracked_id in tracked:
        if tracked_id not in known:
            label = (
                "Ids the catalog does not know (refused)"
                if tracked_id == rollups.UNKNOWN_TRACKED_ID
                else f"{tracked_id} (no longer in the catalog)"
            )
            choices.append(Choice(tracked_id, label))
    return choices


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/apps/{app_id}/analytics")
    def analytics(
        request: Request, app_id: str, key: str = "", range: str = "", until: str = ""
    ) -> Response:
        page = app_page(ctx, request, app_id, section="analytics", title="Usage analytics")
        fmt = page.fmt
        chosen = _range(fmt, ctx.now(), range, until)
        tracked = rollups.list_tracked_ids(
            ctx, app_id, chosen.until - TRACKED_IDS_LOOKBACK, chosen.until
        )
        choices = _choices(ctx, app_id, tracked)
        key = key[:64]
        if not key and choices:
            key = choices[0].id
        figures = rollups.usage_analytics(
            ctx,
            app_id,
            key,
            granularity=chosen.granularity,
            since=chosen.since,
            until=chosen.until,
            zone=fmt.zone,
        )
        labels = [
            fmt.axis_label(b.start, timedelta(days=1))
            if chosen.granularity == "hour"
            else f"{fmt.local(b.start):%b %d}"
            for b in figures.buckets
        ]
        unit = "hour" if chosen.granularity == "hour" else "day"
        consumed_chart = bar_chart(
            f"Consumed per {unit}",
            labels,
            [BarSeries("consumed", [b.consumed for b in figures.buckets], "series-a")],
            fmt,
            y_label="units",
            x_label=f"{unit} ({fmt.time_zone})",
        )
        refusals_chart = bar_chart(
            f"Tracks per {unit}",
            labels,
            [
                BarSeries("succeeded", [b.succeeded for b in figures.buckets], "series-c"),
                BarSeries("refused", [b.refused for b in figures.buckets], "series-b"),
            ],
            fmt,
            y_label="tracks",
            x_label=f"{unit} ({fmt.time_zone})",
        )
        return show(
            "analytics.html",
            page,
            key=key,
            choices=choices,
            chosen=chosen,
            ranges=RANGES,
            figures=figures,
            consumed=sum(b.consumed for b in figures.buckets),
            succeeded=sum(b.succeeded for b in figures.buckets),
            refused=sum(b.refused for b in figures.buckets),
            refused_units=sum(b.refused_units for b in figures.buckets),
            consumed_chart=consumed_chart,
            refusals_chart=refusals_chart,
            top_per_day=rollups.TOP_PER_DAY,
            last_top_day=figures.top_until - timedelta(days=1),
        )

    return router
