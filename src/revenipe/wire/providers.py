"""Payment providers: an app's Stripe and RevenueCat settings (never the secrets), and
the answer to a provider's webhook delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from revenipe.wire.common import Doc, TypedDict

if TYPE_CHECKING:
    from revenipe.services.purchases.revenuecat.settings import RevenueCatStatus
    from revenipe.services.purchases.stripe.settings import StripeStatus
    from revenipe.services.purchases.webhooks import Received


class WebhookReceived(TypedDict):
    """A provider's webhook delivery, answered 2xx: the provider stops sending it."""

    received: bool
    event_id: str
    outcome: Annotated[
        str,
        Doc(
            "applied; ignored (recorded, nothing to change); pending (recorded, waiting for "
            "an earlier event of the same subscription); or duplicate (applied once already)"
        ),
    ]


class StripeSettingsOut(TypedDict):
    configured: bool
    mode: Annotated[str | None, Doc("test or live: the secret key's mode")]
    secret_key_last4: str | None
    webhook_secret_set: bool
    webhook_url: Annotated[str, Doc("Where Stripe should send this app's events")]


class RevenueCatSettingsOut(TypedDict):
    configured: Annotated[bool, Doc("Whether an authorization value is set")]
    webhook_url: Annotated[str, Doc("Where RevenueCat should send this app's events")]


class StripeStatusOut(TypedDict):
    """`revenipe stripe ...`: the settings as the command line shows them."""

    app_id: str
    configured: bool
    mode: str | None
    secret_key_last4: str | None
    webhook_secret_set: bool
    webhook_path: str


class RevenueCatStatusOut(TypedDict):
    """`revenipe revenuecat ...`: the settings as the command line shows them."""

    app_id: str
    configured: bool
    webhook_path: str


def webhook_received_to_wire(received: Received) -> WebhookReceived:
    return {"received": True, "event_id": received.event_id, "outcome": received.outcome}


def stripe_settings_to_wire(status: StripeStatus, base_url: str) -> StripeSettingsOut:
    """The settings as the server shows them; `base_url` is where this server is reached."""
    return {
        "configured": status.configured,
        "mode": status.mode,
        "secret_key_last4": status.secret_key_last4,
        "webhook_secret_set": status.webhook_secret_set,
        "webhook_url": f"{base_url.rstrip('/')}{status.webhook_path}",
    }


def revenuecat_settings_to_wire(status: RevenueCatStatus, base_url: str) -> RevenueCatSettingsOut:
    return {
        "configured": status.configured,
        "webhook_url": f"{base_url.rstrip('/')}{status.webhook_path}",
    }


def stripe_status_to_wire(status: StripeStatus) -> StripeStatusOut:
    return {
        "app_id": status.app_id,
        "configured": status.configured,
        "mode": status.mode,
        "secret_key_last4": status.secret_key_last4,
        "webhook_secret_set": status.webhook_secret_set,
        "webhook_path": status.webhook_path,
    }


def revenuecat_status_to_wire(status: RevenueCatStatus) -> RevenueCatStatusOut:
    return {
        "app_id": status.app_id,
        "configured": status.configured,
        "webhook_path": status.webhook_path,
    }
