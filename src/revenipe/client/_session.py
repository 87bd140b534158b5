"""The client SDK's local state, and the protocol calls built from it.

Shared by `Revenipe` (async) and `RevenipeSync`: each call builder returns a `Call` whose
decoder also applies the answer to the local state, so the twins only send and await.
"""

from __future__ import annotations

import inspect
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from revenipe.client._core import (
    IDEMPOTENCY_KEY_HEADER,
    Call,
    Retry,
    path,
    require_amount,
    require_choice,
    require_id,
    require_optional_id,
    without_none,
)
from revenipe.client._decode import Reader
from revenipe.client._errors import InvalidArgumentError, NotLoggedInError
from revenipe.client._models import (
    AttachPaymentMethodResult,
    CancelResult,
    ChangePlanResult,
    Customer,
    CustomerEntitlement,
    Product,
    StartPurchaseResult,
    TrackResult,
    UncancelResult,
    UsageKey,
    decode_products,
)
from revenipe.client._reservations import HoldResult, SettleResult

C = TypeVar("C")

PURCHASE_METHODS = ("hosted_checkout", "payment_sheet")
TRIAL_BEHAVIORS = ("direct", "setup_intent")
CANCEL_MODES = ("period_end", "immediately")


class ProcessInstance(Generic[C]):
    """A class attribute giving the process-wide instance of its class, made on first use."""

    def __init__(self) -> None:
        self._instances: dict[type[Any], Any] = {}
        self._lock = threading.Lock()

    def __get__(self, obj: object, owner: type[C]) -> C:
        with self._lock:
            if owner not in self._instances:
                self._instances[owner] = owner()
            instance: C = self._instances[owner]
            return instance


def anonymous_identity() -> str:
    """A random external identity for an anonymous customer: 32 hex digits."""
    return secrets.token_hex(16)


def checked_token(token: object) -> str:
    """The value a customer token supplier returned, checked to be a usable token."""
    if inspect.isawaitable(token):
        if inspect.iscoroutine(token):
            token.close()
        raise InvalidArgumentError(
            "customer_token_supplier returned an awaitable; RevenipeSync needs a sync supplier"
        )
    if not isinstance(token, str) or not token:
        raise InvalidArgumentError(
            f"customer_token_supplier must return a non-empty string, got {token!r}"
        )
    return token


class Session:
    """Who is logged in, their last known access state, and their cached customer token.

    Thread-safe: the sync client may be shared by threads. Answers for a customer that is
    no longer the logged-in one (a login switched customers meanwhile) change nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._external_id: str | None = None
        self._customer: Customer | None = None
        self._token: tuple[str, str] | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def external_id(self) -> str | None:
        """The external id of the logged-in customer."""
        return self._external_id

    @property
    def customer(self) -> Customer | None:
        """The logged-in customer's last known state."""
        return self._customer

    def clear(self) -> None:
        """Forgets the customer, their state and their token."""
        with self._lock:
            self._external_id = None
            self._customer = None
            self._token = None

    def _require_customer(self) -> Customer:
        customer = self._customer
        if customer is None:
            raise NotLoggedInError("no customer is logged in: call login or anonym_login first")
        return customer

    # -- customer tokens ---------------------------------------------------------------

    def token_for(self, external_id: str) -> str | None:
        """The cached customer token of `external_id`, if any."""
        cached = self._token
        return cached[1] if cached is not None and cached[0] == external_id else None

    def remember_token(self, external_id: str, token: str) -> None:
        """Caches `token` for `external_id` (one customer at a time)."""
        with self._lock:
            self._token = (external_id, token)

    # -- reads of local state ----------------------------------------------------------

    def get_entitlement(self, entitlement_id: str) -> CustomerEntitlement | None:
        """The first local entry of `entitlement_id`, if the customer holds it."""
        customer = self._customer
        if customer is None:
            return None
        return next((e for e in customer.entitlements if e.entitlement_id == entitlement_id), None)

    def get_usage_key(self, key_id: str) -> UsageKey | None:
        """The local state of usage key `key_id`, if the customer has it."""
        customer = self._customer
        if customer is None:
            return None
        return next((k for k in customer.usage_keys if k.key_id == key_id), None)

    def has_entitlement(self, entitlement_id: str, now: datetime) -> bool:
        """Whether a local entry of `entitlement_id` exists and has not expired at `now`."""
        customer = self._customer
        if customer is None:
            return False
        return any(
            e.entitlement_id == entitlement_id and (e.expires_at is None or e.expires_at > now)
            for e in customer.entitlements
        )

    # -- calls -------------------------------------------------------------------------

    def login_call(self, external_id: str) -> Call[Customer]:
        """`POST v1/client/auth`; on success the customer becomes the logged-in one."""
        require_id("external_id", external_id)

        def decode(r: Reader) -> Customer:
            customer = Customer._decode(r)
            with self._lock:
                if self._token is not None and self._token[0] != external_id:
                    self._token = None
                self._external_id = external_id
                self._customer = customer
            return customer

        return Call(
            "POST",
            "v1/client/auth",
            decode,
            body={"client_id": external_id},
            customer=external_id,
        )

    def refresh_call(self) -> Call[Customer]:
        """`POST v1/customer/refresh_entitlements`; replaces the local access state."""
        customer = self._require_customer()

        def decode(r: Reader) -> Customer:
            fresh = Customer._decode_lists(r, client_id=customer.client_id)
            self._update(customer.client_id, lambda _: fresh)
            return fresh

        return Call(
            "POST",
            "v1/customer/refresh_entitlements",
            decode,
            body={"client_id": customer.client_id},
            customer=self._external_id,
        )

    def track_call(self, id: str, value: int, idempotency_key: str | None) -> Call[TrackResult]:
        """`POST v1/customer/track`, with an idempotency key reused on every retry."""
        require_id("id", id)
        require_amount("value", value)
        key = require_optional_id("idempotency_key", idempotency_key) or str(uuid.uuid4())
        customer = self._require_customer()
        # The protocol's rule: the source of the first local entitlement of that id; a
        # usage key has no entitlement entry, hence null.
        entry = next((e for e in customer.entitlements if e.entitlement_id == id), None)
        source = entry.access_source_id if entry is not None else None

        def decode(r: Reader) -> TrackResult:
            result = TrackResult._decode(r)
            if result.success:
                self._update(customer.client_id, lambda c: _with_remaining(c, id, source, result))
            return result

        return Call(
            "POST",
            "v1/customer/track",
            decode,
            body={
                "access_source_id": source,
                "entitlement_id": id,
                "client_id": customer.client_id,
                "value": value,
            },
            headers={IDEMPOTENCY_KEY_HEADER: key},
            customer=self._external_id,
        )

    def hold_call(
        self, id: str, value: int, ttl_seconds: int | None, idempotency_key: str | None
    ) -> Call[HoldResult]:
        """`POST v1/customer/reservations` (our extension), with an idempotency key
        reused on every retry, so a retried hold holds once."""
        require_id("id", id)
        require_amount("value", value)
        if ttl_seconds is not None and (type(ttl_seconds) is not int or ttl_seconds < 1):
            raise InvalidArgumentError(
                f"ttl_seconds must be a positive integer, got {ttl_seconds!r}"
            )
        key = require_optional_id("idempotency_key", idempotency_key) or str(uuid.uuid4())
        customer = self._require_customer()
        body = {"entitlement_id": id, "client_id": customer.client_id, "value": value}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return Call(
            "POST",
            "v1/customer/reservations",
            HoldResult._decode,
            body=body,
            headers={IDEMPOTENCY_KEY_HEADER: key},
            customer=self._external_id,
        )

    def close_call(self, reservation_id: str, value: int | None) -> Call[SettleResult]:
        """`POST v1/customer/reservations/{id}/settle` (`value`) or `/release` (None).
        Safe to resend: the first close's answer is replayed."""
        require_id("reservation_id", reservation_id)
        customer = self._require_customer()
        body: dict[str, Any] = {"client_id": customer.client_id}
        if value is None:
            action = "release"
        else:
            if type(value) is not int or value < 0:
                raise InvalidArgumentError(f"value must be an integer >= 0, got {value!r}")
            body["value"] = value
            action = "settle"
        return Call(
            "POST",
            f"v1/customer/reservations/{path(reservation_id)}/{action}",
            SettleResult._decode,
            body=body,
            customer=self._external_id,
        )

    def products_call(self) -> Call[list[Product]]:
        """`GET v1/customer/app/products`; needs no login."""
        return Call("GET", "v1/customer/app/products", decode_products, customer=self._external_id)

    def start_purchase_call(
        self,
        product_id: str,
        purchase_method: str,
        trial_payment_method_behavior: str | None,
        success_url: str | None,
        cancel_url: str | None,
        extra_params: Mapping[str, str] | None,
    ) -> Call[StartPurchaseResult]:
        """`POST v1/customer/purchase/start_purchase` (not resent once it may have arrived)."""
        require_id("product_id", product_id)
        require_choice("purchase_method", purchase_method, PURCHASE_METHODS)
        if trial_payment_method_behavior is not None:
            require_choice(
                "trial_payment_method_behavior", trial_payment_method_behavior, TRIAL_BEHAVIORS
            )
        require_optional_id("success_url", success_url)
        require_optional_id("cancel_url", cancel_url)
        if extra_params is not None and not (
            isinstance(extra_params, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in extra_params.items())
        ):
            raise InvalidArgumentError("extra_params must map strings to strings")
        customer = self._require_customer()
        body = without_none(
            product_id=product_id,
            purchase_method=purchase_method,
            trial_payment_method_behavior=trial_payment_method_behavior,
            success_url=success_url,
            cancel_url=cancel_url,
            extra_params=dict(extra_params) if extra_params is not None else None,
            customer_id=customer.client_id,
        )
        return self._customer_call(
            "v1/customer/purchase/start_purchase",
            StartPurchaseResult._decode,
            body,
            Retry.BEFORE_SENT,
        )

    def cancel_call(self, source_id: str, cancel_mode: str) -> Call[CancelResult]:
        """`POST v1/customer/purchase/subscription/cancel`."""
        require_id("source_id", source_id)
        require_choice("cancel_mode", cancel_mode, CANCEL_MODES)
        customer = self._require_customer()
        body = {"client_id": customer.client_id, "source_id": source_id, "cancel_mode": cancel_mode}
        return self._customer_call(
            "v1/customer/purchase/subscription/cancel", CancelResult._decode, body, Retry.ALWAYS
        )

    def uncancel_call(self, source_id: str) -> Call[UncancelResult]:
        """`POST v1/customer/purchase/subscription/uncancel`."""
        require_id("source_id", source_id)
        customer = self._require_customer()
        body = {"client_id": customer.client_id, "source_id": source_id}
        return self._customer_call(
            "v1/customer/purchase/subscription/uncancel",
            UncancelResult._decode,
            body,
            Retry.ALWAYS,
        )

    def change_plan_call(self, source_id: str, new_product_id: str) -> Call[ChangePlanResult]:
        """`POST v1/customer/purchase/subscription/change_plan` (not resent once sent)."""
        require_id("source_id", source_id)
        require_id("new_product_id", new_product_id)
        customer = self._require_customer()
        body = {
            "client_id": customer.client_id,
            "source_id": source_id,
            "new_product_id": new_product_id,
        }
        return self._customer_call(
            "v1/customer/purchase/subscription/change_plan",
            ChangePlanResult._decode,
            body,
            Retry.BEFORE_SENT,
        )

    def attach_payment_method_call(
        self,
        access_source_id: str,
        mode: str,
        success_url: str | None,
        cancel_url: str | None,
    ) -> Call[AttachPaymentMethodResult]:
        """`POST v1/customer/purchase/subscriptions/attach/payment_method`."""
        require_id("access_source_id", access_source_id)
        require_choice("mode", mode, PURCHASE_METHODS)
        require_optional_id("success_url", success_url)
        require_optional_id("cancel_url", cancel_url)
        customer = self._require_customer()
        body = without_none(
            client_id=customer.client_id,
            access_source_id=access_source_id,
            mode=mode,
            success_url=success_url,
            cancel_url=cancel_url,
        )
        return self._customer_call(
            "v1/customer/purchase/subscriptions/attach/payment_method",
            AttachPaymentMethodResult._decode,
            body,
            Retry.BEFORE_SENT,
        )

    # -- helpers -----------------------------------------------------------------------

    def _customer_call(
        self,
        path: str,
        decode: Callable[[Reader], C],
        body: dict[str, Any],
        retry: Retry,
    ) -> Call[C]:
        return Call("POST", path, decode, body=body, retry=retry, customer=self._external_id)

    def _update(self, client_id: str, change: Callable[[Customer], Customer]) -> None:
        """Applies `change` to the local state, if `client_id` is still the logged-in one."""
        with self._lock:
            if self._customer is not None and self._customer.client_id == client_id:
                self._customer = change(self._customer)


def _with_remaining(
    customer: Customer, tracked_id: str, source: str | None, result: TrackResult
) -> Customer:
    """The customer after a successful track: only the tracked id's `remaining` changes.

    For an entitlement, the entry of the source that paid (the answer's source, else the
    one sent) gets the answer's `remaining`; for a usage key, the key does. Other
    balances the track touched (the key's entitlements, the keys an entitlement feeds)
    are brought up to date by `refresh_entitlements`.
    """
    paid_by = result.access_source_id or source
    entitlements = list(customer.entitlements)
    matching = [i for i, e in enumerate(entitlements) if e.entitlement_id == tracked_id]
    if matching:
        index = next(
            (i for i in matching if entitlements[i].access_source_id == paid_by), matching[0]
        )
        entitlements[index] = replace(entitlements[index], remaining=result.remaining)
    usage_keys = tuple(
        replace(k, remaining=result.remaining) if k.key_id == tracked_id else k
        for k in customer.usage_keys
    )
    return replace(customer, entitlements=tuple(entitlements), usage_keys=usage_keys)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
