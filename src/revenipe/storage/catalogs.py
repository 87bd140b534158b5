"""The catalog versions each app applied: table `catalog_versions`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_one
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
