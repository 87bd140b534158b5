"""The catalog versions each app applied: table `catalog_versions`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_all, fetch_one, time_out
from revenipe.storage.schema import catalog_versions


@dataclass(frozen=True, slots=True)
class CatalogVersionRow:
    app_id: str
    version: int
    document: str
    """The catalog as JSON."""
    digest: str
    applied_at: datetime


_COLUMNS = Columns(catalog_versions, ("app_id", "version", "document", "digest", "applied_at"))
_INSERT = _COLUMNS.insert()
_GET = Sql(
    f"SELECT {_COLUMNS.select} FROM catalog_versions "
    "WHERE app_id = %(app_id)s AND version = %(version)s"
)


def insert_catalog_version(
    conn: Connection, app_id: str, version: int, document: str, digest: str, now: datetime
) -> None:
    row = CatalogVersionRow(app_id, version, document, digest, applied_at=now)
    execute(conn, _INSERT, _COLUMNS.params(conn, row))


def get_catalog_version(conn: Connection, app_id: str, version: int) -> CatalogVersionRow | None:
    row = fetch_one(conn, _GET, {"app_id": app_id, "version": version})
    return CatalogVersionRow(**_COLUMNS.read(row)) if row is not None else None


@dataclass(frozen=True, slots=True)
class CatalogVersionSummary:
    version: int
    digest: str
    applied_at: datetime


_LIST = Sql(
    "SELECT version, digest, applied_at FROM catalog_versions WHERE app_id = %(app_id)s "
    "AND version < %(before)s ORDER BY version DESC LIMIT %(limit)s"
)


def list_catalog_versions(
    conn: Connection, app_id: str, *, before: int | None, limit: int
) -> list[CatalogVersionSummary]:
    """A page of an app's catalog versions, newest first, below `before` (keyset)."""
    params = {
        "app_id": app_id,
        "before": before if before is not None else 2**31 - 1,
        "limit": limit,
    }
    summaries = []
    for version, digest, applied_at in fetch_all(conn, _LIST, params):
        moment = time_out(applied_at)
        if moment is None:
            raise ValueError("catalog_versions.applied_at read as NULL")
        summaries.append(CatalogVersionSummary(int(version), digest, moment))
    return summaries
