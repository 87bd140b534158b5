"""Applying a catalog to an app.

What a new version changes for customers who already hold grants (docs/adr/0004):
grants are copies of the product's terms taken when they were granted, so a new
version never rewrites, wipes or doubles an existing balance. It changes what future
grants get, the usage keys (views over entitlements) and the product list. Removing an
entitlement that customers hold, or changing its type, is refused with the ids named.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.subscriptions import LIVE_STATUSES
from revenipe.services.context import ServiceContext
from revenipe.storage import apps as app_store
from revenipe.storage import catalogs as catalog_store
from revenipe.storage import grants as grant_store
from revenipe.storage import sources as source_store


@dataclass(frozen=True, slots=True)
class AppliedCatalog:
    version: int
    changed: bool
    """False when the catalog was identical to the current one (nothing written)."""


def canonical_document(catalog: Catalog) -> str:
    return json.dumps(catalog.to_document(), sort_keys=True, separators=(",", ":"))


def apply_catalog(ctx: ServiceContext, app_id: str, catalog: Catalog) -> AppliedCatalog:
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        return apply_catalog_in(ctx, conn, app, catalog, ctx.now())


def apply_catalog_in(
    ctx: ServiceContext, conn: Connection, app: app_store.AppRow, catalog: Catalog, now: datetime
) -> AppliedCatalog:
    document = canonical_document(catalog)
    digest = hashlib.sha256(document.encode()).hexdigest()
    if app.catalog_version:
        current = catalog_store.get_catalog_version(conn, app.id, app.catalog_version)
        if current is not None and current.digest == digest:
            return AppliedCatalog(app.catalog_version, changed=False)
    _refuse_breaking_changes(conn, app.id, catalog)
    version = app.catalog_version + 1
    catalog_store.insert_catalog_version(conn, app.id, version, document, digest, now)
    app_store.update_app_catalog_version(conn, app.id, version)
    return AppliedCatalog(version, changed=True)


def _refuse_breaking_changes(conn: Connection, app_id: str, catalog: Catalog) -> None:
    problems = []
    for entitlement_id, held_type in sorted(
        grant_store.map_held_entitlement_types(conn, app_id).items()
    ):
        entitlement = catalog.entitlements_by_id.get(entitlement_id)
        if entitlement is None:
            problems.append(
                f"entitlement {entitlement_id!r} is held by customers and cannot be removed"
            )
        elif entitlement.type.value != held_type:
            problems.append(
                f"entitlement {entitlement_id!r} is held by customers as "
                f"{held_type} and cannot become {entitlement.type.value}"
            )
    for product_id in sorted(
        source_store.list_subscribed_product_ids(conn, app_id, sorted(LIVE_STATUSES))
    ):
        product = catalog.products_by_id.get(product_id)
        if product is None:
            problems.append(
                f"product {product_id!r} has live subscriptions (or a plan change to it is "
                "pending) and cannot be removed"
            )
        elif product.recurring_interval is None:
            problems.append(
                f"product {product_id!r} has live subscriptions and must keep a recurring_interval"
            )
    if problems:
        raise RevenipeError(ErrorCode.CATALOG_CONFLICT, "; ".join(problems), field="entitlements")


def get_catalog(ctx: ServiceContext, app_id: str) -> tuple[int, Catalog]:
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        return app.catalog_version, ctx.catalog(conn, app)
