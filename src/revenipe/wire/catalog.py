"""Catalogs: the client protocol's products, and the server API's catalog document,
applied and validated catalogs (also the command line's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from revenipe.wire.common import TypedDict

if TYPE_CHECKING:
    from revenipe.catalog import Catalog, Product
    from revenipe.services.catalogs import AppliedCatalog


class ProductEntitlement(TypedDict):
    entitlement_id: str
    name: str
    description: str | None


class ProductOut(TypedDict):
    product_id: str
    name: str
    description: str | None
    price: int | None
    type: str
    recurring_interval: str | None
    app_store_product_id: str | None
    play_store_product_id: str | None
    entitlements: list[ProductEntitlement]


class Products(TypedDict):
    products: list[ProductOut]


class CatalogOut(TypedDict):
    version: int
    catalog: dict[str, Any]


class CatalogApplied(TypedDict):
    version: int
    changed: bool


class CatalogValid(TypedDict):
    valid: bool
    entitlements: int
    usage_keys: int
    products: int


class CatalogAppliedToApp(TypedDict):
    """`revenipe catalog apply`: which app, and the version it now has."""

    app_id: str
    version: int
    changed: bool


def product_to_wire(product: Product, catalog: Catalog) -> ProductOut:
    return {
        "product_id": product.id,
        "name": product.name,
        # The published client decodes descriptions as non-null strings.
        "description": product.description or "",
        "price": product.price,
        "type": product.type.value,
        "recurring_interval": product.recurring_interval.value
        if product.recurring_interval
        else None,
        "app_store_product_id": product.app_store_product_id,
        "play_store_product_id": product.play_store_product_id,
        "entitlements": [
            {
                "entitlement_id": g.entitlement_id,
                "name": catalog.entitlements_by_id[g.entitlement_id].name,
                "description": catalog.entitlements_by_id[g.entitlement_id].description or "",
            }
            for g in product.grants
        ],
    }


def products_to_wire(catalog: Catalog) -> Products:
    return {"products": [product_to_wire(p, catalog) for p in catalog.products]}


def catalog_to_wire(version: int, catalog: Catalog) -> CatalogOut:
    return {"version": version, "catalog": catalog.to_document()}


def catalog_applied_to_wire(applied: AppliedCatalog) -> CatalogApplied:
    return {"version": applied.version, "changed": applied.changed}


def catalog_valid_to_wire(catalog: Catalog) -> CatalogValid:
    return {
        "valid": True,
        "entitlements": len(catalog.entitlements),
        "usage_keys": len(catalog.usage_keys),
        "products": len(catalog.products),
    }


def catalog_applied_to_app_to_wire(app_id: str, applied: AppliedCatalog) -> CatalogAppliedToApp:
    return {"app_id": app_id, "version": applied.version, "changed": applied.changed}
