"""Helpers shared by the tests (importable as `support`: tests/ is on the path)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import revenipe


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 31, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


DEMO_CATALOG = """
entitlements:
  - id: monthly_credits
    name: Monthly credits
    type: metered
  - id: bonus_credits
    name: Bonus credits
    type: metered
  - id: purchased_credits
    name: Purchased credits
    type: metered
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits, bonus_credits, purchased_credits]
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    price: 0
    default: true
    grants:
      - entitlement: monthly_credits
        amount: 100
        reset: period
        rollover: {max: 0}
      - entitlement: export_hd
  - id: pro
    name: Pro
    type: subscription
    recurring_interval: month
    price: 1000
    grants:
      - entitlement: monthly_credits
        amount: 1000
        reset: period
        rollover: {max: 500}
  - id: pack_50
    name: 50 credits
    type: one_time
    price: 500
    grants:
      - entitlement: purchased_credits
        amount: 50
        expires_after: P30D
  - id: welcome
    name: Welcome bonus
    type: one_time
    grants:
      - entitlement: bonus_credits
        amount: 10
"""


def assert_verified(backend: revenipe.Backend, app_id: str | None = None) -> None:
    report = backend.verify(app_id)
    assert report.ok, "\n".join(report.problems)


# --- the property tests' own time arithmetic (independent of the engine's) ---------


def months_later(moment: datetime, months: int) -> datetime:
    """`moment` plus whole calendar months, the day clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def boundary(anchor: datetime, unit: str, index: int) -> datetime:
    """Start of period `index`, always counted from the anchor."""
    if unit == "day":
        return anchor + timedelta(days=index)
    if unit == "week":
        return anchor + timedelta(days=7 * index)
    if unit == "year":
        return months_later(anchor, 12 * index)
    assert unit == "month"
    return months_later(anchor, index)
