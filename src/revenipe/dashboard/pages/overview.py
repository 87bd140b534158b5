"""Overview of an app: tracks per day (succeeded and refused), active customers, the
most used usage keys and entitlements, purchases and subscriptions by status. Every
figure comes from the rollups (docs/adr/0021), never from usage events or the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from revenipe.dashboard.charts import BarSeries, bar_chart
from revenipe.dashboard.page import app_page, show
from revenipe.services import catalogs as catalog_service
from revenipe.services import rollups
from revenipe.services.context import ServiceContext
from revenipe.storage.rollups import SourceCountRow

DAY_CHOICES = (7, 30, 90)
DEFAULT_DAYS = 30


@dataclass(frozen=True, slots=True)
class KeyRow:
    tracked_id: str
    name: str
    kind: str
    """"usage key", "entitlement", or "unknown ids" (refusals of ids not in the catalog)."""
    consumed: int
    succeeded: int
    refused: int


@dataclass(frozen=True, slots=True)
class SourceGroup:
    kind: str
    rows: list[SourceCountRow]
    total: int


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/apps/{app_id}/")
    def overview(request: Request, app_id: str, days: int = DEFAULT_DAYS) -> Response:
        page = app_page(ctx, request, app_id, section="overview", title="Overview")
        days = days if days in DAY_CHOICES else DEFAULT_DAYS
        fmt = page.fmt
        figures = rollups.overview(ctx, app_id, days=days, zone=fmt.zone)
        _, catalog = catalog_service.get_catalog(ctx, app_id)
        names = {e.id: (e.name, "entitlement") for e in catalog.entitlements}
        names.update({k.id: (k.name, "usage key") for k in catalog.usage_keys})
        names[rollups.UNKNOWN_TRACKED_ID] = ("Ids the catalog does not know", "unknown ids")
        keys = []
        for k in figures.top_keys:
            name, kind = names.get(k.tracked_id, (k.tracked_id, "no longer in the catalog"))
            keys.append(KeyRow(k.tracked_id, name, kind, k.consumed, k.succeeded, k.refused))
        succeeded = sum(d.succeeded for d in figures.days)
        refused = sum(d.refused for d in figures.days)
        labels = [f"{d.day:%b %d}" for d in figures.days]
        tracks_chart = bar_chart(
            f"Tracks per day, last {days} days",
            labels,
            [
                BarSeries("succeeded", [d.succeeded for d in figures.days], "series-a"),
                BarSeries("refused", [d.refused for d in figures.days], "series-b"),
            ],
            fmt,
            y_label="tracks",
            x_label=f"day ({fmt.time_zone})",
        )
        active_chart = bar_chart(
            "Active customers per day (UTC days)",
            [f"{day:%b %d}" for day, _ in figures.active_customers],
            [BarSeries("customers", [n for _, n in figures.active_customers], "series-c")],
            fmt,
            y_label="customers",
            x_label="day (UTC)",
        )
        groups: dict[str, list[SourceCountRow]] = {}
        for row in figures.sources:
            groups.setdefault(row.kind, []).append(row)
        sources = [
            SourceGroup(kind, rows, sum(r.sources for r in rows)) for kind, rows in groups.items()
        ]
        latest_active = figures.active_customers[-1] if figures.active_customers else None
        return show(
            "overview.html",
            page,
            days=days,
            day_choices=DAY_CHOICES,
            figures=figures,
            keys=keys,
            succeeded=succeeded,
            refused=refused,
            refusal_percent=(100 * refused / (succeeded + refused)) if succeeded + refused else 0,
            tracks_chart=tracks_chart,
            active_chart=active_chart,
            sources=sources,
            latest_active=latest_active,
        )

    return router
