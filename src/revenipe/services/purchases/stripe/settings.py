"""An app's Stripe account: its secret key and its webhook endpoint's signing secret.

Stored in `provider_settings` (provider `stripe`) as JSON, in the clear like the app's
token signing secret: Revenipe has to present the key to Stripe, so whoever reads the
database can too (protect it like the keys themselves). Shown back only as whether
each is set and the key's mode and last four characters.

Only live apps use Stripe: a sandbox app sells through the sandbox, whatever is set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.sources import Provider
from revenipe.providers.stripe_gateway import StripeGateway
from revenipe.services.context import ServiceContext
from revenipe.storage import apps as app_store

WEBHOOK_PATH = "/v1/webhooks/stripe/{app_id}"
_SECRET_KEY = re.compile(r"^(sk|rk)_(test|live)_[0-9A-Za-z]{10,247}$")
_WEBHOOK_SECRET = re.compile(r"^whsec_[0-9A-Za-z+/=]{10,250}$")


@dataclass(frozen=True, slots=True)
class StripeSettings:
    secret_key: str
    webhook_secret: str | None = None

    @property
    def mode(self) -> str:
        """test or live: which of the Stripe account's two worlds the key reaches."""
        return self.secret_key.split("_")[1]


@dataclass(frozen=True, slots=True)
class StripeStatus:
    """What can be shown of the settings: never a secret."""

    app_id: str
    configured: bool
    mode: str | None
    secret_key_last4: str | None
    webhook_secret_set: bool

    @property
    def webhook_path(self) -> str:
        return WEBHOOK_PATH.format(app_id=self.app_id)


def load(conn: Connection, app_id: str) -> StripeSettings | None:
    """The app's Stripe settings, or None when it has none."""
    text = app_store.get_provider_settings(conn, app_id, Provider.STRIPE)
    if text is None:
        return None
    values = json.loads(text)
    return StripeSettings(values["secret_key"], values.get("webhook_secret"))


def _status(app_id: str, settings: StripeSettings | None) -> StripeStatus:
    if settings is None:
        return StripeStatus(app_id, False, None, None, False)
    return StripeStatus(
        app_id, True, settings.mode, settings.secret_key[-4:], settings.webhook_secret is not None
    )


def _checked(value: Any, pattern: re.Pattern[str], field: str, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value.strip()):
        # Never echo the value: it may be a real secret pasted in the wrong place.
        raise RevenipeError(ErrorCode.INVALID_ARGUMENT, f"{field} must be {what}", field=field)
    return value.strip()


def configure(
    ctx: ServiceContext,
    app_id: str,
    *,
    secret_key: Any = None,
    webhook_secret: Any = None,
) -> StripeStatus:
    """Set the secret key, the webhook secret or both (what is not given is kept; the
    first call needs the key). The app sells through Stripe from then on."""
    key = _checked(
        secret_key,
        _SECRET_KEY,
        "secret_key",
        "a Stripe secret or restricted key (sk_test_..., sk_live_..., rk_test_..., rk_live_...)",
    )
    whsec = _checked(
        webhook_secret, _WEBHOOK_SECRET, "webhook_secret", "a webhook signing secret (whsec_...)"
    )
    if key is None and whsec is None:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, "give a secret_key, a webhook_secret or both"
        )
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        if app.sandbox:
            raise RevenipeError(
                ErrorCode.LIVE_ONLY,
                "a sandbox app sells through the built-in sandbox, never through Stripe; "
                "create a live app (`revenipe apps create` without --sandbox) for Stripe",
            )
        current = load(conn, app.id)
        if key is None and current is None:
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT,
                "set the secret_key first (with the webhook_secret, or before it)",
                field="secret_key",
            )
        updated = StripeSettings(
            key or (current.secret_key if current else ""),
            whsec or (current.webhook_secret if current else None),
        )
        document = {"secret_key": updated.secret_key, "webhook_secret": updated.webhook_secret}
        app_store.save_provider_settings(
            conn, app.id, Provider.STRIPE, json.dumps(document, sort_keys=True), ctx.now()
        )
        return _status(app.id, updated)


def status(ctx: ServiceContext, app_id: str) -> StripeStatus:
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        return _status(app.id, load(conn, app.id))


def remove(ctx: ServiceContext, app_id: str) -> StripeStatus:
    """Forget the app's Stripe settings: it sells nothing until they are set again, and
    its Stripe subscriptions can no longer be changed here (access stays as it is)."""
    with ctx.db.write() as conn:
        app = ctx.require_app(conn, app_id)
        app_store.delete_provider_settings(conn, app.id, Provider.STRIPE)
        return _status(app.id, None)


def connect(
    ctx: ServiceContext, app_id: str
) -> tuple[app_store.AppRow, StripeSettings, StripeGateway]:
    """The app, its Stripe settings and its Stripe account (one read, no call yet)."""
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        settings = require(conn, app)
    return app, settings, ctx.stripe.gateway(settings.secret_key)


def require(conn: Connection, app: app_store.AppRow) -> StripeSettings:
    """The settings of an app that sells through Stripe, or `provider_not_configured`."""
    settings = None if app.sandbox else load(conn, app.id)
    if settings is None:
        raise RevenipeError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            "Stripe is not configured for this app (`revenipe stripe configure`, or PUT "
            "/v1/providers/stripe)",
        )
    return settings
