"""An app's RevenueCat webhook: the authorization value RevenueCat sends with each event.

RevenueCat sends, verbatim in the `Authorization` header of every webhook, the value set
in its dashboard ("Authorization header value"). We keep that value in
`provider_settings` (provider `revenuecat`), in the clear like the Stripe settings: it
must be compared with what arrives. It is never shown back, only whether it is set.

Only live apps take store purchases: a sandbox app sells through the sandbox.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.services.context import ServiceContext
from revenipe.storage import apps as app_store

WEBHOOK_PATH = "/v1/webhooks/revenuecat/{app_id}"
MIN_AUTHORIZATION_LENGTH = 16
MAX_AUTHORIZATION_LENGTH = 500
# What an HTTP header value can carry: visible ASCII and inner spaces ("Bearer abc").
_AUTHORIZATION = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


@dataclass(frozen=True, slots=True)
class RevenueCatSettings:
    authorization: str
    """The exact `Authorization` header value RevenueCat sends."""


@dataclass(frozen=True, slots=True)
class RevenueCatStatus:
    """What can be shown of the settings: never the authorization value."""

    app_id: str
    configured: bool

    @property
    def webhook_path(self) -> str:
        return WEBHOOK_PATH.format(app_id=self.app_id)


def load(conn: Connection, app_id: str) -> RevenueCatSettings | None:
    """The app's RevenueCat settings, or None when it has none."""
    text = app_store.get_provider_settings(conn, app_id, Provider.REVENUECAT)
    if text is None:
        return None
    return RevenueCatSettings(json.loads(text)["authorization"])


def configure(ctx: ServiceContext, app_id: str, *, authorization: Any) -> RevenueCatStatus:
    """Set (or replace) the authorization value RevenueCat will send."""
    if (
        not isinstance(authorization, str)
        or not MIN_AUTHORIZATION_LENGTH <= len(authorization) <= MAX_AUTHORIZATION_LENGTH
        or not _AUTHORIZATION.fullmatch(authorization)
    ):
        # Never echo the value: it is a secret.
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"authorization must be {MIN_AUTHORIZATION_LENGTH} to {MAX_AUTHORIZATION_LENGTH} "
            "printable ASCII characters (what RevenueCat sends in the Authorization header, "
            "for instance 'Bearer ' and a long random string), without leading or trailing "
            "spaces",
            field="authorization",
        )
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        if app.sandbox:
            raise RevenipeError(
                ErrorCode.LIVE_ONLY,
                "a sandbox app sells through the built-in sandbox, never through the app "
                "stores; create a live app (`revenipe apps create` without --sandbox)",
            )
        document = json.dumps({"authorization": authorization}, sort_keys=True)
        app_store.save_provider_settings(conn, app.id, Provider.REVENUECAT, document, ctx.now())
        return RevenueCatStatus(app.id, True)


def status(ctx: ServiceContext, app_id: str) -> RevenueCatStatus:
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        return RevenueCatStatus(app.id, load(conn, app.id) is not None)


def remove(ctx: ServiceContext, app_id: str) -> RevenueCatStatus:
    """Forget the authorization: RevenueCat's events are refused until it is set again
    (access already given stays as it is)."""
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        app_store.delete_provider_settings(conn, app.id, Provider.REVENUECAT)
        return RevenueCatStatus(app.id, False)


def require(conn: Connection, app: app_store.AppRow) -> RevenueCatSettings:
    """The settings of an app that takes RevenueCat's events, or `provider_not_configured`."""
    settings = None if app.sandbox else load(conn, app.id)
    if settings is None:
        raise RevenipeError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            "RevenueCat is not configured for this app (`revenipe revenuecat configure`, "
            "or PUT /v1/providers/revenuecat)",
        )
    return settings
