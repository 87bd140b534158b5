"""Access sources and the grants they give: the one place that keeps grants in step
with what a customer holds.

Every way of getting a product ends here: a default or manual grant, a sandbox
checkout, a Stripe or store purchase. A source opens with its product's grants; a
subscription's grants stop paying when its access ends (`access_ends_at`: the end of
the period it is paid through, or when it ended) and renewals move that end on; a plan
change ends the old product's grants and starts the new one's at the instant of the
change; a refund or dispute takes back what is left. Every change is a ledger entry;
nothing is deleted or rewritten.

Every function runs inside the caller's write transaction, after the customer's row
lock. Modules:

- `grants`: a product's grants opened, ended, their access end moved;
- `subscriptions`: subscriptions opened and kept in step with their lifecycle;
- `sources`: one-off purchases, revocations, transfers, a provider's told history;
- `holds`: closing a reservation's hold (settle, release) and releasing expired holds on
  catch-up, each at its expiry.

Usage and purchases build on this package; it imports neither.
"""

from revenipe.services.access.grants import end_grants, grant_product, insert_grant
from revenipe.services.access.sources import (
    KnownSubscription,
    ToldHistory,
    follow_history,
    move_source,
    open_purchase,
    revoke_source,
)
from revenipe.services.access.subscriptions import (
    catch_up,
    is_subscription,
    open_subscription,
    pending_change_of,
    subscription_of,
    update_subscription,
)

__all__ = [
    "KnownSubscription",
    "ToldHistory",
    "catch_up",
    "end_grants",
    "follow_history",
    "grant_product",
    "insert_grant",
    "is_subscription",
    "move_source",
    "open_purchase",
    "open_subscription",
    "pending_change_of",
    "revoke_source",
    "subscription_of",
    "update_subscription",
]
