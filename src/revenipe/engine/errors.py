"""Stable, machine-readable codes.

A *refusal* is an expected business outcome of a track (``success: false``); an
*input error* is a request that cannot be understood or is not allowed. Both carry a
code that never changes once published. A broken invariant is neither: it is a bug and
raises ``InvariantViolation``.
"""

from __future__ import annotations

from enum import StrEnum


class RefusalCode(StrEnum):
    """Why a track (or check) did not consume anything. Sent as ``error`` on the wire."""

    INSUFFICIENT_BALANCE = "insufficient_balance"
    """The grants that may pay hold less than the requested value in total."""
    UNKNOWN_ENTITLEMENT = "unknown_entitlement"
    """The id is neither an entitlement nor a usage key of the app's catalog."""
    NOT_METERED = "not_metered"
    """The id is a boolean entitlement: it gives access, it cannot be consumed."""
    NO_ACCESS = "no_access"
    """The customer holds no grant that could ever pay for this id."""
    ACCESS_EXPIRED = "access_expired"
    """Every grant that could pay has expired or its access source ended."""
    UNKNOWN_ACCESS_SOURCE = "unknown_access_source"
    """The named access source does not exist for this customer."""
    RESERVATION_CLOSED = "reservation_closed"
    """A settle of a reservation already released or expired, or a release of one
    already settled: nothing changes (docs/concepts/reservations.md)."""


class ErrorCode(StrEnum):
    """Codes of input errors (HTTP 4xx, CLI exit status 2)."""

    INVALID_VALUE = "invalid_value"
    INVALID_ID = "invalid_id"
    INVALID_ARGUMENT = "invalid_argument"
    INVALID_CATALOG = "invalid_catalog"
    CATALOG_CONFLICT = "catalog_conflict"
    APP_NOT_FOUND = "app_not_found"
    CUSTOMER_NOT_FOUND = "customer_not_found"
    PRODUCT_NOT_FOUND = "product_not_found"
    ENTITLEMENT_NOT_FOUND = "entitlement_not_found"
    USAGE_EVENT_NOT_FOUND = "usage_event_not_found"
    RESERVATION_NOT_FOUND = "reservation_not_found"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    REVERSAL_EXCEEDS_CONSUMED = "reversal_exceeds_consumed"
    DATABASE_BUSY = "database_busy"
    ACCESS_SOURCE_NOT_FOUND = "access_source_not_found"
    PRODUCT_NOT_PURCHASABLE = "product_not_purchasable"
    SUBSCRIPTION_EXISTS = "subscription_exists"
    SUBSCRIPTION_NOT_ACTIVE = "subscription_not_active"
    SUBSCRIPTION_CANCELING = "subscription_canceling"
    PLAN_CHANGE_NOT_ALLOWED = "plan_change_not_allowed"
    NOT_A_TRIAL = "not_a_trial"
    PURCHASES_NOT_CONFIGURED = "purchases_not_configured"
    CHECKOUT_NOT_FOUND = "checkout_not_found"
    CHECKOUT_CLOSED = "checkout_closed"
    SANDBOX_ONLY = "sandbox_only"
    LIVE_ONLY = "live_only"
    """Stripe is for live apps: a sandbox app sells through the sandbox, always."""
    PROVIDER_ERROR = "provider_error"
    PROVIDER_NOT_CONFIGURED = "provider_not_configured"
    WEBHOOK_REFUSED = "webhook_refused"
    WEBHOOK_UNAUTHORIZED = "webhook_unauthorized"
    """A webhook without the authorization the app configured for its provider."""
    SOURCE_NOT_MANAGEABLE = "source_not_manageable"
    INVALID_BATCH = "invalid_batch"
    """A batch track that cannot be run as a whole (empty, over 1,000 items, an item
    without an idempotency key): nothing in it was applied."""
    RETURN_URL_NOT_ALLOWED = "return_url_not_allowed"
    """A purchase return URL that is not on the app's list (or, with no list, not
    http(s)); or a URL that may never be listed (`javascript:`, `data:`, ...)."""
    WEBHOOK_ENDPOINT_NOT_FOUND = "webhook_endpoint_not_found"
    WEBHOOK_DELIVERY_NOT_FOUND = "webhook_delivery_not_found"
    UNSAFE_WEBHOOK_URL = "unsafe_webhook_url"
    """An outbound webhook URL that is not https, or resolves to a private address."""
    DATABASE_UNAVAILABLE = "database_unavailable"
    """The database could not be reached or dropped the connection; the operation was
    rolled back or its outcome is unknown: retry (with the same idempotency key)."""


class RevenipeError(Exception):
    """An expected error with a stable code and a message meant for a person."""

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvariantViolation(AssertionError):
    """A rule that must always hold did not: a bug, never a user error.

    Raised, never asserted: `python -O` strips `assert` statements, not `raise`
    (tests/unit/test_no_bare_asserts.py keeps the package free of them). It stays an
    `AssertionError` because that is what it replaced and what it means: whatever
    treated a failed `assert` as a bug (pytest, hypothesis, a test that collects
    `AssertionError`s) treats this one the same, and no `except RevenipeError` catches
    it, so the server answers 500 and the CLI exits with a traceback.
    """
