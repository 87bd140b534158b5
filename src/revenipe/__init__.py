"""Revenipe: usage-based entitlements (credits, limits, feature access) you host yourself.

The embedded API (`revenipe.open`) runs the engine in-process; the CLI (`revenipe`)
and the server expose the same operations; `revenipe.client` is the SDK.

Names are loaded on first use, so that `import revenipe.client` (the SDK) does not
load the engine, SQLAlchemy or the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "App": "revenipe.embedded",
    "Backend": "revenipe.embedded",
    "open": "revenipe.embedded",
    "Catalog": "revenipe.catalog",
    "CatalogError": "revenipe.catalog",
    "load_catalog": "revenipe.catalog",
    "catalog_from_file": "revenipe.catalog.loader",
    "ErrorCode": "revenipe.engine.errors",
    "RefusalCode": "revenipe.engine.errors",
    "RevenipeError": "revenipe.engine.errors",
    "CustomerState": "revenipe.services.customers",
    "BatchItem": "revenipe.services.usage.batch",
    "BatchOutcome": "revenipe.services.usage.batch",
    "CheckResult": "revenipe.services.usage.track",
    "CloseResult": "revenipe.services.usage.reservations",
    "HoldResult": "revenipe.services.usage.reservations",
    "ReversalResult": "revenipe.services.usage.reversal",
    "TrackResult": "revenipe.services.usage.track",
}

__all__ = [
    "App",
    "Backend",
    "BatchItem",
    "BatchOutcome",
    "Catalog",
    "CatalogError",
    "CheckResult",
    "CloseResult",
    "CustomerState",
    "ErrorCode",
    "HoldResult",
    "RefusalCode",
    "RevenipeError",
    "ReversalResult",
    "TrackResult",
    "catalog_from_file",
    "load_catalog",
    "open",
]

if TYPE_CHECKING:
    from revenipe.catalog import Catalog, CatalogError, load_catalog
    from revenipe.catalog.loader import catalog_from_file
    from revenipe.embedded import App, Backend, open
    from revenipe.engine.errors import ErrorCode, RefusalCode, RevenipeError
    from revenipe.services.customers import CustomerState
    from revenipe.services.usage.batch import BatchItem, BatchOutcome
    from revenipe.services.usage.reservations import CloseResult, HoldResult
    from revenipe.services.usage.reversal import ReversalResult
    from revenipe.services.usage.track import CheckResult, TrackResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'revenipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
