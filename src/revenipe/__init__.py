"""Revenipe: usage-based entitlements (credits, limits, feature access) you host yourself.

The embedded API (`revenipe.open`) runs the engine in-process; the CLI (`revenipe`)
and the server expose the same operations.
"""

from revenipe.catalog import Catalog, CatalogError, load_catalog
from revenipe.catalog.loader import catalog_from_file
from revenipe.embedded import App, Backend, open
from revenipe.engine.errors import ErrorCode, RefusalCode, RevenipeError
from revenipe.services.customers import CustomerState
from revenipe.services.usage import CheckResult, ReversalResult, TrackResult

__all__ = [
    "App",
    "Backend",
    "Catalog",
    "CatalogError",
    "CheckResult",
    "CustomerState",
    "ErrorCode",
    "RefusalCode",
    "RevenipeError",
    "ReversalResult",
    "TrackResult",
    "catalog_from_file",
    "load_catalog",
    "open",
]
