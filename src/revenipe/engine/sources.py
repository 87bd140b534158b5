"""Who provides an access source: the provider names stored on every source.

Plain vocabulary shared by access, customers and purchases, so that none of them has to
import a provider to name one.
"""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    """The provider of an access source; the value is what the database stores."""

    REVENIPE = "revenipe"
    """Granted by this server: default products, manual and promotional grants."""
    SANDBOX = "sandbox"
    STRIPE = "stripe"
    REVENUECAT = "revenuecat"


MANAGED_PROVIDERS = frozenset({Provider.SANDBOX, Provider.STRIPE})
"""Providers whose subscriptions customers change through this server."""

STORE_PROVIDERS = frozenset({Provider.REVENUECAT})
"""Sources sold by an app store: the customer manages them in the store."""
