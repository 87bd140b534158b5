"""Apps and what belongs to one app alone: tables `apps`, `secret_keys`,
`provider_settings`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    execute,
    fetch_all,
    fetch_one,
    fetch_scalar,
    time_in,
)
from revenipe.storage.schema import apps, secret_keys


@dataclass(frozen=True, slots=True)
class AppRow:
    id: str
    name: str
    token_policy: str
    token_signing_secret: str
    catalog_version: int
    created_at: datetime
    sandbox: bool = False
    """A sandbox app sells through the built-in sandbox provider and has a test clock."""
    clock_offset_seconds: int = 0
    """How far the app's test clock is ahead of the server's (sandbox apps only)."""
    return_urls: tuple[str, ...] = ()
    """The purchase return URLs the app accepts (`engine.return_urls`); stored as JSON."""


_APP = Columns(
    apps,
    (
        "id",
        "name",
        "token_policy",
        "token_signing_secret",
        "catalog_version",
        "created_at",
        "sandbox",
        "clock_offset_seconds",
        "return_urls",
    ),
)
_INSERT_APP = _APP.insert()
_GET_APP = Sql(f"SELECT {_APP.select} FROM apps WHERE id = %(id)s")
_LIST_APPS = Sql(f"SELECT {_APP.select} FROM apps ORDER BY created_at")
_UPDATE_CATALOG_VERSION = Sql("UPDATE apps SET catalog_version = %(version)s WHERE id = %(id)s")
_UPDATE_TOKEN_POLICY = Sql("UPDATE apps SET token_policy = %(policy)s WHERE id = %(id)s")
_UPDATE_RETURN_URLS = Sql("UPDATE apps SET return_urls = %(urls)s WHERE id = %(id)s")
_ADVANCE_CLOCK = Sql(
    "UPDATE apps SET clock_offset_seconds = clock_offset_seconds + %(seconds)s WHERE id = %(id)s"
)


def insert_app(conn: Connection, app: AppRow) -> None:
    params = _APP.params(conn, app)
    params["return_urls"] = _urls_in(app.return_urls)
    execute(conn, _INSERT_APP, params)


def _urls_in(urls: Sequence[str]) -> str | None:
    return json.dumps(list(urls)) if urls else None


def _app_row(row: Sequence[Any]) -> AppRow:
    fields = _APP.read(row)
    stored = fields.pop("return_urls")
    return AppRow(**fields, return_urls=tuple(json.loads(stored)) if stored else ())


def get_app(conn: Connection, app_id: str) -> AppRow | None:
    row = fetch_one(conn, _GET_APP, {"id": app_id})
    return _app_row(row) if row is not None else None


def require_app(conn: Connection, app_id: str) -> AppRow:
    """The app, or `RevenipeError(APP_NOT_FOUND)`."""
    app = get_app(conn, app_id)
    if app is None:
        raise RevenipeError(ErrorCode.APP_NOT_FOUND, f"no app with id {app_id!r}")
    return app


def list_apps(conn: Connection) -> list[AppRow]:
    return [_app_row(r) for r in fetch_all(conn, _LIST_APPS, {})]


def update_app_catalog_version(conn: Connection, app_id: str, version: int) -> None:
    execute(conn, _UPDATE_CATALOG_VERSION, {"id": app_id, "version": version})


def update_app_token_policy(conn: Connection, app_id: str, policy: str) -> None:
    execute(conn, _UPDATE_TOKEN_POLICY, {"id": app_id, "policy": policy})


def update_app_return_urls(conn: Connection, app_id: str, urls: Sequence[str]) -> None:
    execute(conn, _UPDATE_RETURN_URLS, {"id": app_id, "urls": _urls_in(urls)})


def update_app_clock(conn: Connection, app_id: str, advance_seconds: int) -> None:
    """Move a sandbox app's test clock forward (added in SQL: no lost update)."""
    execute(conn, _ADVANCE_CLOCK, {"id": app_id, "seconds": advance_seconds})


# --- secret keys ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretKeyRow:
    """A secret key as stored: its hash, never the key."""

    id: str
    app_id: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None


_KEY = Columns(secret_keys, ("id", "app_id", "key_hash", "created_at", "revoked_at"))
_INSERT_KEY = _KEY.insert()
_FIND_APP_ID_BY_KEY = Sql(
    "SELECT app_id FROM secret_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL"
)
_LIST_KEYS = Sql(
    f"SELECT {_KEY.select} FROM secret_keys WHERE app_id = %(app_id)s ORDER BY created_at"
)
_REVOKE_KEY = Sql(
    "UPDATE secret_keys SET revoked_at = %(now)s "
    "WHERE id = %(id)s AND app_id = %(app_id)s AND revoked_at IS NULL"
)


def insert_secret_key(
    conn: Connection, key_id: str, app_id: str, key_hash: str, now: datetime
) -> None:
    key = SecretKeyRow(id=key_id, app_id=app_id, key_hash=key_hash, created_at=now, revoked_at=None)
    execute(conn, _INSERT_KEY, _KEY.params(conn, key))


def find_app_id_by_secret_hash(conn: Connection, key_hash: str) -> str | None:
    """The app of an unrevoked secret key, by the key's hash."""
    found = fetch_scalar(conn, _FIND_APP_ID_BY_KEY, {"key_hash": key_hash})
    return str(found) if found is not None else None


def list_secret_keys(conn: Connection, app_id: str) -> list[SecretKeyRow]:
    return [SecretKeyRow(**_KEY.read(r)) for r in fetch_all(conn, _LIST_KEYS, {"app_id": app_id})]


def update_secret_key_revoked(conn: Connection, app_id: str, key_id: str, now: datetime) -> bool:
    """Revoke a key; False if the app has no such key or it was revoked already."""
    params = {"id": key_id, "app_id": app_id, "now": time_in(conn, now)}
    return execute(conn, _REVOKE_KEY, params) > 0


# --- provider settings ------------------------------------------------------------

_GET_SETTINGS = Sql(
    "SELECT settings FROM provider_settings WHERE app_id = %(app_id)s AND provider = %(provider)s"
)
_INSERT_SETTINGS = Sql(
    "INSERT INTO provider_settings (app_id, provider, settings, updated_at) "
    "VALUES (%(app_id)s, %(provider)s, %(settings)s, %(now)s)"
)
_UPDATE_SETTINGS = Sql(
    "UPDATE provider_settings SET settings = %(settings)s, updated_at = %(now)s "
    "WHERE app_id = %(app_id)s AND provider = %(provider)s"
)
_DELETE_SETTINGS = Sql(
    "DELETE FROM provider_settings WHERE app_id = %(app_id)s AND provider = %(provider)s"
)


def get_provider_settings(conn: Connection, app_id: str, provider: str) -> str | None:
    """The provider's settings of an app (a JSON document), or None if not configured."""
    found = fetch_scalar(conn, _GET_SETTINGS, {"app_id": app_id, "provider": provider})
    return str(found) if found is not None else None


def save_provider_settings(
    conn: Connection, app_id: str, provider: str, settings: str, now: datetime
) -> None:
    """Insert or replace the provider's settings of an app."""
    params = {"app_id": app_id, "provider": provider, "settings": settings}
    params["now"] = time_in(conn, now)
    exists = get_provider_settings(conn, app_id, provider) is not None
    execute(conn, _UPDATE_SETTINGS if exists else _INSERT_SETTINGS, params)


def delete_provider_settings(conn: Connection, app_id: str, provider: str) -> None:
    execute(conn, _DELETE_SETTINGS, {"app_id": app_id, "provider": provider})
