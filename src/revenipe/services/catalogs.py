"""Applying a catalog to an app.

What a new version changes for customers who already hold grants (docs/adr/0004):
grants are copies of the product's terms taken when they were granted, so a new
version never rewrites, wipes or doubles an existing balance. It changes what future
grants get, the usage keys (views over entitlements) and the product list. Removing an
entitlement that customers hold, or changing its type, is refused with the ids named.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.catalog import Catalog, catalog_to_yaml, load_catalog
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


# -- the dashboard's catalog editor ----------------------------------------------------------


def apply_catalog_text(ctx: ServiceContext, app_id: str, text: str) -> AppliedCatalog:
    """Validate a catalog written in YAML and apply it as the app's next version (as the
    API's catalog route does). Raises `CatalogError` with each problem's line."""
    return apply_catalog(ctx, app_id, load_catalog(text))


def list_catalog_versions(
    ctx: ServiceContext, app_id: str, *, before: int | None = None, limit: int = 50
) -> list[catalog_store.CatalogVersionSummary]:
    """An app's catalog versions, newest first (a page, keyset by version)."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        return catalog_store.list_catalog_versions(conn, app_id, before=before, limit=limit)


def catalog_version_yaml(ctx: ServiceContext, app_id: str, version: int) -> str:
    """A version as YAML in canonical form ('' for version 0, the empty catalog)."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        if version == 0:
            return ""
        if catalog_store.get_catalog_version(conn, app_id, version) is None:
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT, f"this app has no catalog version {version}"
            )
        return catalog_to_yaml(ctx.catalogs.get(conn, app_id, version))


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: str
    """`added`, `removed`, `context`, `hunk` (an @@ line) or `header` (--- and +++)."""
    text: str


def diff_catalog_versions(
    ctx: ServiceContext, app_id: str, old: int, new: int, *, context: int = 3
) -> list[DiffLine]:
    """The unified diff from version `old` to version `new`, each as canonical YAML."""
    before = catalog_version_yaml(ctx, app_id, old).splitlines()
    after = catalog_version_yaml(ctx, app_id, new).splitlines()
    lines = difflib.unified_diff(
        before, after, f"version {old}", f"version {new}", n=context, lineterm=""
    )
    # The first two lines are the headers (--- and +++); a removed line may look alike.
    return [
        DiffLine("header" if index < 2 else _diff_kind(line), line)
        for index, line in enumerate(lines)
    ]


def _diff_kind(line: str) -> str:
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "added"
    if line.startswith("-"):
        return "removed"
    return "context"
