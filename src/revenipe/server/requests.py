"""Request models. Strict: no coercion of "5", 5.0 or true into integers.

Answers are not modelled here: their shapes and builders are `revenipe.wire`'s.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from revenipe.engine.amounts import MAX_AMOUNT

Amount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT)]
CatalogId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
InternalId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
ExternalId = Annotated[StrictStr, Field(min_length=1, max_length=256)]


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


# --- server API ----------------------------------------------------------------------


class GrantRequest(ApiRequest):
    product_id: CatalogId | None = None
    entitlement_id: CatalogId | None = None
    amount: Amount | None = None
    expires_at: Annotated[str, Field(max_length=64)] | None = None
    priority: Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)] | None = None


class ApiTrackRequest(ApiRequest):
    id: CatalogId = Field(description="An entitlement id or a usage key id")
    value: Amount
    access_source_id: InternalId | None = None


class TrackBatchItem(ApiRequest):
    """One item of a batch track. Its fields are checked as a single track's are, item by
    item: a bad value or id is that item's error, not the batch's."""

    customer: Any = Field(description="The customer's external id (created if new)")
    id: Any = Field(description="An entitlement id, a usage key id or a priced action")
    value: Any = Field(description="A positive integer, at most 2^53-1")
    idempotency_key: Any = Field(
        description="Required (1-255 characters): a retried batch replays this item"
    )


class TrackBatchRequest(ApiRequest):
    items: list[TrackBatchItem] = Field(description="1 to 1,000 tracks, answered in this order")


class CheckRequest(ApiRequest):
    id: CatalogId
    value: Amount
    access_source_id: InternalId | None = None


class ReversalRequest(ApiRequest):
    amount: Amount | None = None


class TokenRequest(ApiRequest):
    ttl_seconds: Annotated[StrictInt, Field(ge=1, le=7 * 24 * 3600)] | None = None


class ClockAdvance(ApiRequest):
    """How far to move a sandbox app's clock forward (the parts add up)."""

    days: Annotated[StrictInt, Field(ge=0, le=3660)] = 0
    hours: Annotated[StrictInt, Field(ge=0, le=87_840)] = 0
    seconds: Annotated[StrictInt, Field(ge=0, le=316_224_000)] = 0


class IntentConfirm(ProtocolRequest):
    client_secret: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    outcome: Literal["succeeded", "declined"] = "succeeded"


class AppSettingsUpdate(ApiRequest):
    token_policy: Literal["enforce", "open"] | None = None
    return_urls: list[Any] | None = Field(
        default=None,
        max_length=50,
        description="Purchase return URLs the app accepts: exact, or a prefix ending in '*'; "
        "custom schemes allowed (myapp://paid); [] accepts any http(s) URL",
    )


TtlSeconds = Annotated[
    StrictInt,
    Field(description="How long the hold lasts: 1 to 86400 seconds (default 600)"),
]


class HoldRequest(ApiRequest):
    id: CatalogId = Field(description="An entitlement id or a usage key id")
    value: Amount
    ttl_seconds: TtlSeconds | None = None
    access_source_id: InternalId | None = None


class SettleRequest(ApiRequest):
    value: Annotated[
        StrictInt, Field(ge=0, le=MAX_AMOUNT, description="The actual amount; 0 releases")
    ]


class ClientHoldRequest(ProtocolRequest):
    entitlement_id: CatalogId = Field(description="An entitlement id or a usage key id")
    client_id: InternalId
    value: Amount
    ttl_seconds: TtlSeconds | None = None
    access_source_id: InternalId | None = None


class ClientSettleRequest(ProtocolRequest):
    client_id: InternalId
    value: Annotated[
        StrictInt, Field(ge=0, le=MAX_AMOUNT, description="The actual amount; 0 releases")
    ]


class ClientReleaseRequest(ProtocolRequest):
    client_id: InternalId
