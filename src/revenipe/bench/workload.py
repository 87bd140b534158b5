"""The bench's app: its catalog, and customers set up through the embedded API.

Every measured customer holds grants of all three entitlements behind the usage key
`credits`, drawn in this order: a monthly plan grant of 3 (resetting each period), a
bonus of 4, a pack of 10^9. Each track takes 2 credits, so a customer's 2nd track
spans the monthly and bonus grants and its 4th spans the bonus and the pack: draws
cross grants now and then, as they do in real life, then settle on the pack.
"""

from __future__ import annotations

from collections.abc import Callable

import revenipe
from revenipe.catalog import Catalog, load_catalog

TRACKED_ID = "credits"
TRACK_VALUE = 2
PACK_CREDITS = 1_000_000_000
HOT_TRACKS_COVERED = PACK_CREDITS // TRACK_VALUE
"""Tracks one customer's pack pays for: a hot customer, tracked by every caller at
once for a whole run, never runs out (a run makes some 10^5 tracks at most)."""

CATALOG = """
entitlements:
  - {id: monthly_credits, name: Monthly credits, type: metered}
  - {id: bonus_credits, name: Bonus credits, type: metered}
  - {id: purchased_credits, name: Purchased credits, type: metered}
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits, bonus_credits, purchased_credits]
products:
  - id: plan
    name: Plan
    type: subscription
    recurring_interval: month
    grants:
      - {entitlement: monthly_credits, amount: 3, reset: period}
  - id: pack
    name: Big pack
    type: one_time
    grants:
      - {entitlement: purchased_credits, amount: %d}
"""


def catalog() -> Catalog:
    return load_catalog(CATALOG % PACK_CREDITS)


def customer_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


def add_customers(
    app: revenipe.App, names: list[str], progress: Callable[[int], None] | None = None
) -> list[str]:
    """Give each customer the plan, a bonus and a pack (three API calls each)."""
    for i, name in enumerate(names):
        app.grant_product(name, "plan")
        app.grant_entitlement(name, "bonus_credits", 4)
        app.grant_product(name, "pack")
        if progress is not None and i % 100 == 99:
            progress(i + 1)
    return names
