"""Apps: settings, secret keys and a sandbox app's test clock (server API), and the
command line's app listings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from revenipe.wire.common import Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.apps import CreatedApp
    from revenipe.services.purchases.sandbox.clock import ClockState
    from revenipe.storage import apps as app_store


class AppSettingsOut(TypedDict):
    app_id: str
    name: str
    token_policy: str
    catalog_version: int
    sandbox: bool
    return_urls: list[str]
    """Purchase return URLs accepted: exact, or a prefix ending in `*`; empty: http(s)."""


class SecretKeyOut(TypedDict):
    key_id: str
    secret_key: str


class SecretKeyItem(TypedDict):
    key_id: str
    created_at: Timestamp
    revoked_at: Timestamp | None


class SecretKeyList(TypedDict):
    secret_keys: list[SecretKeyItem]


class ClockOut(TypedDict):
    app_id: str
    now: Timestamp
    clock_offset_seconds: int


class AppCreated(TypedDict):
    """`revenipe apps create`: the secret key is shown this once."""

    app_id: str
    secret_key: str
    catalog_version: int
    sandbox: bool
    return_urls: list[str]


class AppListItem(TypedDict):
    app_id: str
    name: str
    token_policy: str
    catalog_version: int
    sandbox: bool
    created_at: Timestamp


class AppList(TypedDict):
    apps: list[AppListItem]


class TokenPolicySet(TypedDict):
    """`revenipe apps update`: the settings it changes."""

    app_id: str
    name: str
    token_policy: str
    return_urls: list[str]


def app_settings_to_wire(app: app_store.AppRow) -> AppSettingsOut:
    return {
        "app_id": app.id,
        "name": app.name,
        "token_policy": app.token_policy,
        "catalog_version": app.catalog_version,
        "sandbox": bool(app.sandbox),
        "return_urls": list(app.return_urls),
    }


def secret_key_to_wire(key_id: str, secret_key: str) -> SecretKeyOut:
    return {"key_id": key_id, "secret_key": secret_key}


def secret_key_list_to_wire(keys: Sequence[app_store.SecretKeyRow]) -> SecretKeyList:
    """The app's keys, ids and times only (a key is shown once, when created)."""
    return {
        "secret_keys": [
            {
                "key_id": k.id,
                "created_at": timestamp(k.created_at),
                "revoked_at": timestamp(k.revoked_at),
            }
            for k in keys
        ]
    }


def clock_to_wire(state: ClockState) -> ClockOut:
    return {
        "app_id": state.app_id,
        "now": timestamp(state.now),
        "clock_offset_seconds": state.clock_offset_seconds,
    }


def app_created_to_wire(created: CreatedApp) -> AppCreated:
    return {
        "app_id": created.app.id,
        "secret_key": created.secret_key,
        "catalog_version": created.app.catalog_version,
        "sandbox": created.app.sandbox,
        "return_urls": list(created.app.return_urls),
    }


def app_list_to_wire(apps: Sequence[app_store.AppRow]) -> AppList:
    return {
        "apps": [
            {
                "app_id": a.id,
                "name": a.name,
                "token_policy": a.token_policy,
                "catalog_version": a.catalog_version,
                "sandbox": a.sandbox,
                "created_at": timestamp(a.created_at),
            }
            for a in apps
        ]
    }


def token_policy_set_to_wire(app: app_store.AppRow) -> TokenPolicySet:
    return {
        "app_id": app.id,
        "name": app.name,
        "token_policy": app.token_policy,
        "return_urls": list(app.return_urls),
    }
