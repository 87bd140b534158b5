"""The catalog: an app's entitlements, usage keys and products.

- `model`: the validated, immutable catalog (what the rest of the code reads).
- `loader`: YAML/JSON documents in, `Catalog` out, or errors that name the field.
- `lines`: where each problem is in the YAML text, and a catalog written back as YAML.
- `fields`: the typed field checks the loader builds on (each problem by path and why).
"""

from revenipe.catalog.lines import catalog_to_yaml
from revenipe.catalog.loader import CatalogError, load_catalog, parse_catalog
from revenipe.catalog.model import (
    Catalog,
    Cost,
    Entitlement,
    EntitlementType,
    PricedTrack,
    Product,
    ProductGrant,
    ProductType,
    ResetKind,
    UsageKey,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "Cost",
    "Entitlement",
    "EntitlementType",
    "PricedTrack",
    "Product",
    "ProductGrant",
    "ProductType",
    "ResetKind",
    "UsageKey",
    "catalog_to_yaml",
    "load_catalog",
    "parse_catalog",
]
