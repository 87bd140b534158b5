"""Apps (tenants), their secret keys and settings."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from revenipe.catalog import Catalog
from revenipe.engine import return_urls as return_url_rules
from revenipe.engine.amounts import require_text
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services.catalogs import apply_catalog_in
from revenipe.services.context import ServiceContext, new_id
from revenipe.storage import apps as app_store


class TokenPolicy(StrEnum):
    ENFORCE = "enforce"
    """Client requests must carry a customer token minted by the app's backend."""
    OPEN = "open"
    """The original, token-less client protocol: anyone with the app id names any customer."""


@dataclass(frozen=True, slots=True)
class CreatedApp:
    app: app_store.AppRow
    secret_key: str
    """Shown once: only its hash is stored."""


def hash_secret_key(secret_key: str) -> str:
    # Keys are 256 random bits: a plain SHA-256 is enough (no dictionary to defend against).
    return hashlib.sha256(secret_key.encode()).hexdigest()


def create_app(
    ctx: ServiceContext,
    name: str,
    catalog: Catalog | None = None,
    *,
    sandbox: bool = False,
    return_urls: Sequence[str] = (),
) -> CreatedApp:
    """Create an app with one secret key, and apply `catalog` to it if given.

    A sandbox app sells through the built-in sandbox provider (no payment network) and
    has a test clock; whether an app is a sandbox is fixed when it is created.
    `return_urls` lists the purchase return URLs it accepts (`set_return_urls`).
    """
    name = require_text(name, field="name", max_length=200)
    urls = return_url_rules.check_list(list(return_urls))
    now = ctx.now()
    app = app_store.AppRow(
        id=new_id("app"),
        name=name,
        token_policy=TokenPolicy.ENFORCE.value,
        token_signing_secret=secrets.token_hex(32),
        catalog_version=0,
        created_at=now,
        sandbox=bool(sandbox),
        return_urls=urls,
    )
    secret_key = f"sk_{secrets.token_urlsafe(32)}"
    with ctx.db.write() as conn:
        app_store.insert_app(conn, app)
        app_store.insert_secret_key(conn, new_id("key"), app.id, hash_secret_key(secret_key), now)
        if catalog is not None:
            apply_catalog_in(ctx, conn, app, catalog, now)
            app = ctx.require_app(conn, app.id)
    return CreatedApp(app, secret_key)


def get_app(ctx: ServiceContext, app_id: str) -> app_store.AppRow:
    with ctx.db.read() as conn:
        return ctx.require_app(conn, app_id)


def list_apps(ctx: ServiceContext) -> list[app_store.AppRow]:
    with ctx.db.read() as conn:
        return app_store.list_apps(conn)


def set_token_policy(ctx: ServiceContext, app_id: str, policy: str) -> app_store.AppRow:
    try:
        value = TokenPolicy(policy)
    except ValueError:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            "token policy must be 'enforce' or 'open'",
            field="token_policy",
        ) from None
    with ctx.db.write() as conn:
        ctx.require_app(conn, app_id)
        app_store.update_app_token_policy(conn, app_id, value.value)
        return ctx.require_app(conn, app_id)


def set_return_urls(ctx: ServiceContext, app_id: str, urls: Any) -> app_store.AppRow:
    """Replace the purchase return URLs the app accepts (docs/concepts/purchases.md
    #return-urls): each exact, or a prefix ending in `*`; an empty list goes back to
    accepting any http(s) URL. Bad entries raise `invalid_argument`, naming the entry."""
    checked = return_url_rules.check_list(urls)
    with ctx.db.write() as conn:
        ctx.require_app(conn, app_id)
        app_store.update_app_return_urls(conn, app_id, checked)
        return ctx.require_app(conn, app_id)


def create_secret_key(ctx: ServiceContext, app_id: str) -> tuple[str, str]:
    """A new secret key for the app: (key id, key). The key is shown only now."""
    secret_key = f"sk_{secrets.token_urlsafe(32)}"
    key_id = new_id("key")
    with ctx.db.write() as conn:
        ctx.require_app(conn, app_id)
        app_store.insert_secret_key(conn, key_id, app_id, hash_secret_key(secret_key), ctx.now())
    return key_id, secret_key


def list_secret_keys(ctx: ServiceContext, app_id: str) -> list[app_store.SecretKeyRow]:
    """The app's secret keys: ids and dates, never the keys."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        return app_store.list_secret_keys(conn, app_id)


def revoke_secret_key(ctx: ServiceContext, app_id: str, key_id: str) -> None:
    with ctx.db.write() as conn:
        if not app_store.update_secret_key_revoked(conn, app_id, key_id, ctx.now()):
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT, f"no active secret key {key_id!r} in this app"
            )


def app_for_secret_key(ctx: ServiceContext, secret_key: str) -> str | None:
    """The app a (non-revoked) secret key belongs to, or None."""
    with ctx.db.read() as conn:
        return app_store.find_app_id_by_secret_hash(conn, hash_secret_key(secret_key))
