"""Request and response models. Strict: no coercion of "5", 5.0 or true into integers.

Requests are validated with these models; responses are built as plain dicts by
`revenipe.wire` and documented with these models (the contract test checks the two
agree).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from revenipe.engine.amounts import MAX_AMOUNT

Amount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT)]
CatalogId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
InternalId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
ExternalId = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Timestamp = Annotated[str, Field(description="ISO-8601, UTC", examples=["2026-11-25T10:00:00Z"])]


class ProtocolRequest(BaseModel):
    """Client protocol bodies: unknown fields are ignored (future clients may add some)."""

    model_config = ConfigDict(extra="ignore")


class ApiRequest(BaseModel):
    """Server API bodies: unknown fields are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid")


# --- client protocol: requests ---------------------------------------------------------


class AuthRequest(ProtocolRequest):
    client_id: ExternalId = Field(description="The app's external identity of the customer")


class RefreshRequest(ProtocolRequest):
    client_id: InternalId


class TrackRequest(ProtocolRequest):
    access_source_id: InternalId | None = None
    entitlement_id: CatalogId = Field(description="An entitlement id or a usage key id")
    client_id: InternalId
    value: Amount


class StartPurchaseRequest(ProtocolRequest):
    product_id: CatalogId
    purchase_method: Literal["hosted_checkout", "payment_sheet"]
    trial_payment_method_behavior: Literal["direct", "setup_intent"] | None = None
    success_url: Annotated[StrictStr, Field(max_length=2048)] | None = None
    cancel_url: Annotated[StrictStr, Field(max_length=2048)] | None = None
    extra_params: (
        dict[Annotated[str, Field(max_length=64)], Annotated[StrictStr, Field(max_length=512)]]
        | None
    ) = None
    customer_id: InternalId


class CancelRequest(ProtocolRequest):
    client_id: InternalId
    source_id: InternalId
    cancel_mode: Literal["period_end", "immediately"]


class UncancelRequest(ProtocolRequest):
    client_id: InternalId
    source_id: InternalId


class ChangePlanRequest(ProtocolRequest):
    client_id: InternalId
    source_id: InternalId
    new_product_id: CatalogId


class AttachPaymentMethodRequest(ProtocolRequest):
    client_id: InternalId
    access_source_id: InternalId
    mode: Literal["hosted_checkout", "payment_sheet"]
    success_url: Annotated[StrictStr, Field(max_length=2048)] | None = None
    cancel_url: Annotated[StrictStr, Field(max_length=2048)] | None = None


# --- client protocol: responses ----------------------------------------------------------


class CustomerEntitlement(BaseModel):
    entitlement_id: str
    access_source_id: str
    type: str
    remaining: int
    expires_at: Timestamp | None


class UsageKeyOut(BaseModel):
    key_id: str
    name: str
    remaining: int


class PendingChange(BaseModel):
    change_id: str
    type: str
    billing_mode: str
    status: str
    from_product_id: str
    to_product_id: str
    effective_at: Timestamp | None


class CustomerSubscription(BaseModel):
    access_source_id: str
    product_id: str
    product_name: str
    status: str
    provider: str
    is_trial: bool
    renews_at: Timestamp | None
    expires_at: Timestamp | None
    will_cancel_at_period_end: bool
    can_cancel: bool
    pending_change: PendingChange | None
    payment_method_attached: bool


class CustomerAddOn(BaseModel):
    access_source_id: str
    product_id: str
    product_name: str
    status: str
    billing_type: str
    expires_at: Timestamp | None
    renews_at: Timestamp | None
    can_cancel: bool


class CustomerBasePlan(BaseModel):
    source_id: str
    status: str
    product_id: str
    product_name: str
    interval: str
    period_end: Timestamp | None


class Refresh(BaseModel):
    entitlements: list[CustomerEntitlement]
    usage_keys: list[UsageKeyOut]
    subscriptions: list[CustomerSubscription]
    add_ons: list[CustomerAddOn]
    base_plans: list[CustomerBasePlan]


class Customer(Refresh):
    client_id: str = Field(description="Revenipe's internal customer id")


class TrackResultOut(BaseModel):
    success: bool
    requested: int
    consumed: int
    remaining: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None


class ProductEntitlement(BaseModel):
    entitlement_id: str
    name: str
    description: str | None


class ProductOut(BaseModel):
    product_id: str
    name: str
    description: str | None
    price: int | None
    type: str
    recurring_interval: str | None
    app_store_product_id: str | None
    play_store_product_id: str | None
    entitlements: list[ProductEntitlement]


class Products(BaseModel):
    products: list[ProductOut]


class ErrorOut(BaseModel):
    code: str
    message: str


class WebhookReceived(BaseModel):
    """A provider's webhook delivery, answered 2xx: the provider stops sending it."""

    received: bool
    event_id: str
    outcome: str = Field(
        description="applied; ignored (recorded, nothing to change); pending (recorded, "
        "waiting for an earlier event of the same subscription); or duplicate (applied once "
        "already)"
    )


class CheckoutOut(BaseModel):
    session_id: str
    checkout_url: str


class PaymentSheetOut(BaseModel):
    customer_id: str
    customer_ephemeral_key_secret: str
    payment_intent_client_secret: str | None = None
    subscription_id: str | None = None
    setup_intent_client_secret: str | None = None


class PaymentSetupOut(BaseModel):
    customer_id: str
    ephemeral_key: str
    setup_intent_id: str
    setup_intent_client_secret: str


class DirectSubscriptionOut(BaseModel):
    subscription_id: str
    status: str
    trial_end: Timestamp | None = None


class StartPurchaseOut(BaseModel):
    """At most one of checkout, payment_sheet, setup and subscription is present."""

    purchase_method: str
    product_id: str
    product_type: str
    checkout: CheckoutOut | None = None
    payment_sheet: PaymentSheetOut | None = None
    setup: PaymentSetupOut | None = None
    subscription: DirectSubscriptionOut | None = None


class CancelOut(BaseModel):
    success: bool
    status: str
    will_cancel_at_period_end: bool
    cancels_at: Timestamp | None
    message: str | None


class UncancelOut(BaseModel):
    success: bool


class ChangePlanOut(BaseModel):
    success: bool
    change_type: str
    billing_mode: str
    status: str
    effective_at: Timestamp
    message: str | None


class AttachPaymentMethodOut(BaseModel):
    mode: str
    checkout: CheckoutOut | None = None
    payment_sheet: PaymentSheetOut | None = None


# --- server API ----------------------------------------------------------------------


class GrantRequest(ApiRequest):
    product_id: CatalogId | None = None
    entitlement_id: CatalogId | None = None
    amount: Amount | None = None
    expires_at: Annotated[str, Field(max_length=64)] | None = None
    priority: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)] | None = None


class GrantOut(BaseModel):
    client_id: str
    access_source_id: str
    grant_ids: list[str]


class ApiTrackRequest(ApiRequest):
    id: CatalogId = Field(description="An entitlement id or a usage key id")
    value: Amount
    access_source_id: InternalId | None = None


class ApiTrackOut(TrackResultOut):
    usage_event_id: str
    client_id: str


class CheckRequest(ApiRequest):
    id: CatalogId
    value: Amount
    access_source_id: InternalId | None = None


class DrawOut(BaseModel):
    grant_id: str
    access_source_id: str
    entitlement_id: str
    amount: int


class CheckOut(BaseModel):
    would_succeed: bool
    requested: int
    available: int
    remaining_after: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None
    draws: list[DrawOut]


class ReversalRequest(ApiRequest):
    amount: Amount | None = None


class ReversalOut(BaseModel):
    reversal_id: str | None
    usage_event_id: str
    amount: int
    total_reversed: int
    credits: list[dict[str, Any]]


class TokenRequest(ApiRequest):
    ttl_seconds: Annotated[StrictInt, Field(ge=1, le=7 * 24 * 3600)] | None = None


class TokenOut(BaseModel):
    token: str
    client_id: str
    expires_at: Timestamp


class ApiCustomer(Customer):
    external_id: str


class CustomerListItem(BaseModel):
    client_id: str
    external_id: str
    created_at: Timestamp


class CustomerList(BaseModel):
    customers: list[CustomerListItem]
    next_cursor: str | None


class UsageEventOut(BaseModel):
    usage_event_id: str
    client_id: str
    id: str
    access_source_id: str | None
    requested: int
    consumed: int
    reversed: int
    remaining: int
    success: bool
    error: str | None
    idempotency_key: str | None
    created_at: Timestamp


class UsageEventList(BaseModel):
    usage_events: list[UsageEventOut]
    next_cursor: str | None


class LedgerEntryOut(BaseModel):
    id: int
    client_id: str
    grant_id: str
    kind: str
    amount: int
    balance_after: int
    usage_event_id: str | None
    reversal_id: str | None
    effective_at: Timestamp
    recorded_at: Timestamp


class LedgerPage(BaseModel):
    entries: list[LedgerEntryOut]
    next_cursor: str | None


class CatalogOut(BaseModel):
    version: int
    catalog: dict[str, Any]


class CatalogApplied(BaseModel):
    version: int
    changed: bool


class CatalogValid(BaseModel):
    valid: StrictBool
    entitlements: int
    usage_keys: int
    products: int


class AppSettingsOut(BaseModel):
    app_id: str
    name: str
    token_policy: str
    catalog_version: int
    sandbox: bool


class ClockOut(BaseModel):
    app_id: str
    now: Timestamp
    clock_offset_seconds: int


class ClockAdvance(ApiRequest):
    """How far to move a sandbox app's clock forward (the parts add up)."""

    days: Annotated[StrictInt, Field(ge=0, le=3660)] = 0
    hours: Annotated[StrictInt, Field(ge=0, le=87_840)] = 0
    seconds: Annotated[StrictInt, Field(ge=0, le=316_224_000)] = 0


class IntentConfirm(ProtocolRequest):
    client_secret: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    outcome: Literal["succeeded", "declined"] = "succeeded"


class IntentConfirmed(BaseModel):
    id: str
    status: str
    access_source_id: str | None


class AppSettingsUpdate(ApiRequest):
    token_policy: Literal["enforce", "open"]


class SecretKeyOut(BaseModel):
    key_id: str
    secret_key: str


class SecretKeyItem(BaseModel):
    key_id: str
    created_at: Timestamp
    revoked_at: Timestamp | None


class SecretKeyList(BaseModel):
    secret_keys: list[SecretKeyItem]
