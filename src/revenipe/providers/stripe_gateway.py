"""Every call to the official `stripe` library: one `StripeClient` per app's secret key,
over one injectable HTTP client (the library's own seam, `stripe.HTTPClient`), so tests
answer Stripe's requests themselves.

Calls return Stripe's objects as plain dicts (JSON-shaped, as the API sends them) and
raise `RevenipeError(provider_error)` when Stripe refuses or cannot be reached; nothing
here touches the database. Callers never hold a database transaction open across a
call (SQLite has one writer lock): read, call Stripe, then write.

`stripe` is imported on first use, not with this module: importing it costs seconds,
and most commands (and every track) never need it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from revenipe.engine.errors import ErrorCode, RevenipeError

if TYPE_CHECKING:
    import stripe

REQUEST_TIMEOUT_SECONDS = 20
"""A webhook is answered within Stripe's own time-out only if our calls are shorter."""
NETWORK_RETRIES = 2
"""The library retries connection errors and Stripe's 409/5xx, with idempotency keys."""
SUBSCRIPTION_EXPAND = ("schedule",)
_MAX_CLIENTS = 1_000

T = TypeVar("T")


def _library() -> Any:
    import stripe

    return stripe


def api_version() -> str:
    """The Stripe API version this build speaks (the one its `stripe` library pins)."""
    from stripe._api_version import _ApiVersion

    return str(_ApiVersion.CURRENT)


class StripeClients:
    """This process's `StripeClient`s, one per secret key, sharing one HTTP client.

    `http_client` is the library's HTTP seam: None means the library's own (requests,
    with a time-out); tests pass a `stripe.HTTPClient` that answers for Stripe.
    """

    def __init__(self, http_client: stripe.HTTPClient | None = None) -> None:
        self.http_client = http_client
        self._clients: dict[str, StripeGateway] = {}
        self._lock = threading.Lock()

    def gateway(self, secret_key: str) -> StripeGateway:
        with self._lock:
            found = self._clients.get(secret_key)
            if found is not None:
                return found
        lib = _library()
        http = self.http_client or lib.RequestsClient(timeout=REQUEST_TIMEOUT_SECONDS)
        client = lib.StripeClient(secret_key, http_client=http, max_network_retries=NETWORK_RETRIES)
        made = StripeGateway(client)
        with self._lock:
            if len(self._clients) >= _MAX_CLIENTS:
                self._clients.clear()
            return self._clients.setdefault(secret_key, made)


def _plain(value: Any) -> dict[str, Any]:
    data: dict[str, Any] = value.to_dict()
    return data


def _options(idempotency_key: str | None) -> Any:
    return {"idempotency_key": idempotency_key} if idempotency_key else None


class StripeGateway:
    """One app's Stripe account, as the services use it."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self._v1 = client.v1

    def _call(self, action: Callable[[], T]) -> T:
        lib = _library()
        try:
            return action()
        except lib.AuthenticationError:
            raise RevenipeError(
                ErrorCode.PROVIDER_ERROR,
                "Stripe refused the app's secret key; set a valid one with `revenipe stripe "
                "configure` or PUT /v1/providers/stripe",
            ) from None
        except lib.StripeError as exc:
            detail = exc.user_message or "no detail"
            status = f" (HTTP {exc.http_status})" if exc.http_status else ""
            raise RevenipeError(
                ErrorCode.PROVIDER_ERROR, f"Stripe could not do it{status}: {detail}"
            ) from None

    # --- customers and keys ----------------------------------------------------------

    def create_customer(
        self, *, metadata: Mapping[str, str], idempotency_key: str
    ) -> dict[str, Any]:
        params: Any = {"metadata": dict(metadata)}
        return self._call(
            lambda: _plain(self._v1.customers.create(params, _options(idempotency_key)))
        )

    def create_ephemeral_key(self, customer_id: str) -> dict[str, Any]:
        # A mobile PaymentSheet reads the customer with it, in this API version.
        options: Any = {"stripe_version": api_version()}
        params: Any = {"customer": customer_id}
        return self._call(lambda: _plain(self._v1.ephemeral_keys.create(params, options)))

    def retrieve_price(self, price_id: str) -> dict[str, Any]:
        return self._call(lambda: _plain(self._v1.prices.retrieve(price_id)))

    # --- one-time payments ---------------------------------------------------------

    def create_checkout_session(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        values: Any = dict(params)
        return self._call(
            lambda: _plain(self._v1.checkout.sessions.create(values, _options(idempotency_key)))
        )

    def retrieve_checkout_session(self, session_id: str) -> dict[str, Any]:
        return self._call(lambda: _plain(self._v1.checkout.sessions.retrieve(session_id)))

    def create_payment_intent(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        values: Any = dict(params)
        return self._call(
            lambda: _plain(self._v1.payment_intents.create(values, _options(idempotency_key)))
        )

    def retrieve_payment_intent(self, intent_id: str) -> dict[str, Any]:
        """The payment intent with its latest charge (refunded? disputed?) expanded."""
        params: Any = {"expand": ["latest_charge"]}
        return self._call(lambda: _plain(self._v1.payment_intents.retrieve(intent_id, params)))

    def list_refunds(self, intent_id: str) -> list[dict[str, Any]]:
        params: Any = {"payment_intent": intent_id, "limit": 100}
        return self._call(lambda: [_plain(r) for r in self._v1.refunds.list(params).data])

    def list_disputes(self, intent_id: str) -> list[dict[str, Any]]:
        params: Any = {"payment_intent": intent_id, "limit": 100}
        return self._call(lambda: [_plain(d) for d in self._v1.disputes.list(params).data])

    # --- subscriptions ----------------------------------------------------------------

    def create_subscription(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        values: Any = dict(params)
        return self._call(
            lambda: _plain(self._v1.subscriptions.create(values, _options(idempotency_key)))
        )

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription as it stands, with its schedule (a pending downgrade)."""
        params: Any = {"expand": list(SUBSCRIPTION_EXPAND)}
        return self._call(lambda: _plain(self._v1.subscriptions.retrieve(subscription_id, params)))

    def update_subscription(
        self, subscription_id: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        values: Any = {**params, "expand": list(SUBSCRIPTION_EXPAND)}
        return self._call(lambda: _plain(self._v1.subscriptions.update(subscription_id, values)))

    def cancel_subscription(self, subscription_id: str) -> dict[str, Any]:
        """End it now (no refund of the period's rest: that is the app's call in Stripe)."""
        params: Any = {"expand": list(SUBSCRIPTION_EXPAND)}
        return self._call(lambda: _plain(self._v1.subscriptions.cancel(subscription_id, params)))

    def create_schedule(self, subscription_id: str, *, idempotency_key: str) -> dict[str, Any]:
        params: Any = {"from_subscription": subscription_id}
        return self._call(
            lambda: _plain(
                self._v1.subscription_schedules.create(params, _options(idempotency_key))
            )
        )

    def update_schedule(self, schedule_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        values: Any = dict(params)
        return self._call(
            lambda: _plain(self._v1.subscription_schedules.update(schedule_id, values))
        )

    def release_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._call(lambda: _plain(self._v1.subscription_schedules.release(schedule_id)))

    # --- payment methods ------------------------------------------------------------

    def create_setup_intent(
        self, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        values: Any = dict(params)
        return self._call(
            lambda: _plain(self._v1.setup_intents.create(values, _options(idempotency_key)))
        )

    def retrieve_setup_intent(self, setup_intent_id: str) -> dict[str, Any]:
        return self._call(lambda: _plain(self._v1.setup_intents.retrieve(setup_intent_id)))


# --- webhooks -------------------------------------------------------------------------


def verify_webhook(
    payload: bytes, signature_header: str | None, secret: str, *, tolerance_seconds: int
) -> dict[str, Any]:
    """The event in `payload` once its `Stripe-Signature` is verified by the library
    (HMAC-SHA256 with the endpoint's secret, timestamp within the tolerance); else
    `webhook_refused`, saying why but nothing about the secret."""
    lib = _library()
    try:
        event = lib.Webhook.construct_event(
            payload, signature_header, secret, tolerance=tolerance_seconds
        )
    except lib.SignatureVerificationError as exc:
        raise RevenipeError(
            ErrorCode.WEBHOOK_REFUSED, f"the Stripe-Signature does not verify: {exc.user_message}"
        ) from None
    except (ValueError, AttributeError, TypeError):
        raise RevenipeError(
            ErrorCode.WEBHOOK_REFUSED, "the body is not a Stripe event (JSON object)"
        ) from None
    # The library refuses signatures older than the tolerance; one from the future is
    # no fresher, and would stay replayable for as long as it is ahead.
    if signature_timestamp(signature_header or "") > time.time() + tolerance_seconds:
        raise RevenipeError(
            ErrorCode.WEBHOOK_REFUSED, "the Stripe-Signature timestamp is in the future"
        )
    return _plain(event)


def signature_timestamp(signature_header: str) -> int:
    """When Stripe signed this delivery (the header's `t`), for a header that verified."""
    for part in signature_header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    raise RevenipeError(ErrorCode.WEBHOOK_REFUSED, "the Stripe-Signature has no timestamp")
