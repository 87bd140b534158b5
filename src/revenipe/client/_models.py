"""Typed results of the client protocol, decoded strictly from the server's JSON.

Field names and wire types follow the published protocol exactly
(docs/concepts/client-protocol.md#objects). Where the protocol does not say whether a
field may be null, ids, names, statuses and booleans are required and timestamps may be
null (a lifetime purchase has no expiry, a canceled subscription no renewal). Timestamps
are timezone-aware UTC datetimes; amounts are ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from revenipe.client._decode import Reader
from revenipe.client._errors import ProtocolError

__all__ = [
    "AttachPaymentMethodResult",
    "CancelMode",
    "CancelResult",
    "ChangePlanResult",
    "CheckoutSession",
    "Customer",
    "CustomerAddOn",
    "CustomerBasePlan",
    "CustomerEntitlement",
    "CustomerSubscription",
    "CustomerToken",
    "PaymentSetup",
    "PaymentSheet",
    "PendingChange",
    "Product",
    "ProductEntitlement",
    "PurchaseMethod",
    "StartPurchaseResult",
    "TrackResult",
    "TrialPaymentMethodBehavior",
    "TrialSubscription",
    "UncancelResult",
    "UsageKey",
]

PurchaseMethod = Literal["hosted_checkout", "payment_sheet"]
"""How a purchase is paid: a hosted checkout page, or a native payment sheet."""

TrialPaymentMethodBehavior = Literal["direct", "setup_intent"]
"""For trials: start directly without a payment method, or collect one first."""

CancelMode = Literal["period_end", "immediately"]
"""When a canceled subscription stops giving access."""


# -- access state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerEntitlement:
    """One entitlement held from one access source (one grant, in Revenipe's words).

    A customer holding the same entitlement from two sources has two of these.
    """

    entitlement_id: str
    access_source_id: str
    type: str
    remaining: int
    expires_at: datetime | None

    @classmethod
    def _decode(cls, r: Reader) -> CustomerEntitlement:
        return cls(
            entitlement_id=r.string("entitlement_id"),
            access_source_id=r.string("access_source_id"),
            type=r.string("type"),
            remaining=r.integer("remaining"),
            expires_at=r.opt_timestamp("expires_at"),
        )


@dataclass(frozen=True, slots=True)
class UsageKey:
    """A shared balance (e.g. `credits`): `remaining` sums every source that feeds it."""

    key_id: str
    name: str
    remaining: int

    @classmethod
    def _decode(cls, r: Reader) -> UsageKey:
        return cls(
            key_id=r.string("key_id"), name=r.string("name"), remaining=r.integer("remaining")
        )


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A plan change scheduled on a subscription (an upgrade, a downgrade at period end...)."""

    change_id: str
    type: str
    billing_mode: str
    status: str
    from_product_id: str
    to_product_id: str
    effective_at: datetime | None

    @classmethod
    def _decode(cls, r: Reader) -> PendingChange:
        return cls(
            change_id=r.string("change_id"),
            type=r.string("type"),
            billing_mode=r.string("billing_mode"),
            status=r.string("status"),
            from_product_id=r.string("from_product_id"),
            to_product_id=r.string("to_product_id"),
            effective_at=r.opt_timestamp("effective_at"),
        )


@dataclass(frozen=True, slots=True)
class CustomerSubscription:
    """A subscription the customer holds (status `active`, `trialing`, `canceled`...)."""

    access_source_id: str
    product_id: str
    product_name: str
    status: str
    provider: str
    is_trial: bool
    renews_at: datetime | None
    expires_at: datetime | None
    will_cancel_at_period_end: bool
    can_cancel: bool
    pending_change: PendingChange | None
    payment_method_attached: bool

    @classmethod
    def _decode(cls, r: Reader) -> CustomerSubscription:
        return cls(
            access_source_id=r.string("access_source_id"),
            product_id=r.string("product_id"),
            product_name=r.string("product_name"),
            status=r.string("status"),
            provider=r.string("provider"),
            is_trial=r.boolean("is_trial"),
            renews_at=r.opt_timestamp("renews_at"),
            expires_at=r.opt_timestamp("expires_at"),
            will_cancel_at_period_end=r.boolean("will_cancel_at_period_end"),
            can_cancel=r.boolean("can_cancel"),
            pending_change=r.opt_nested("pending_change", PendingChange._decode),
            payment_method_attached=r.boolean("payment_method_attached"),
        )


@dataclass(frozen=True, slots=True)
class CustomerAddOn:
    """An add-on the customer holds."""

    access_source_id: str
    product_id: str
    product_name: str
    status: str
    billing_type: str
    expires_at: datetime | None
    renews_at: datetime | None
    can_cancel: bool

    @classmethod
    def _decode(cls, r: Reader) -> CustomerAddOn:
        return cls(
            access_source_id=r.string("access_source_id"),
            product_id=r.string("product_id"),
            product_name=r.string("product_name"),
            status=r.string("status"),
            billing_type=r.string("billing_type"),
            expires_at=r.opt_timestamp("expires_at"),
            renews_at=r.opt_timestamp("renews_at"),
            can_cancel=r.boolean("can_cancel"),
        )


@dataclass(frozen=True, slots=True)
class CustomerBasePlan:
    """The customer's base plan (their main subscription)."""

    source_id: str
    status: str
    product_id: str | None
    product_name: str | None
    interval: str
    period_end: datetime | None

    @classmethod
    def _decode(cls, r: Reader) -> CustomerBasePlan:
        return cls(
            source_id=r.string("source_id"),
            status=r.string("status"),
            product_id=r.opt_string("product_id"),
            product_name=r.opt_string("product_name"),
            interval=r.string("interval"),
            period_end=r.opt_timestamp("period_end"),
        )


@dataclass(frozen=True, slots=True)
class Customer:
    """A logged-in customer and their access state.

    `client_id` is Revenipe's *internal* id (not the external id the app logged in with).
    The SDK keeps the latest `Customer` locally; `get_entitlement` and friends read it.
    """

    client_id: str
    entitlements: tuple[CustomerEntitlement, ...] = ()
    usage_keys: tuple[UsageKey, ...] = ()
    subscriptions: tuple[CustomerSubscription, ...] = ()
    add_ons: tuple[CustomerAddOn, ...] = ()
    base_plans: tuple[CustomerBasePlan, ...] = ()

    @classmethod
    def _decode(cls, r: Reader) -> Customer:
        return cls._decode_lists(r, client_id=r.string("client_id"))

    @classmethod
    def _decode_lists(cls, r: Reader, *, client_id: str) -> Customer:
        """The five lists shared by the Customer and Refresh answers."""
        return cls(
            client_id=client_id,
            entitlements=r.items("entitlements", CustomerEntitlement._decode),
            usage_keys=r.items("usage_keys", UsageKey._decode),
            subscriptions=r.items("subscriptions", CustomerSubscription._decode),
            add_ons=r.items("add_ons", CustomerAddOn._decode),
            base_plans=r.items("base_plans", CustomerBasePlan._decode),
        )


# -- usage -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackResult:
    """The answer to `track`.

    `success=False` is a *refusal* (not enough left, unknown id...), not an error: nothing
    was consumed, `consumed` is 0 and `error` says why. Block the action or show an
    upgrade prompt. On success, `remaining` is the balance of what was tracked afterwards.
    """

    success: bool
    requested: int
    consumed: int
    remaining: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None

    @classmethod
    def _decode(cls, r: Reader) -> TrackResult:
        return cls(
            success=r.boolean("success"),
            requested=r.integer("requested"),
            consumed=r.integer("consumed"),
            remaining=r.integer("remaining"),
            entitlement_id=r.string("entitlement_id"),
            access_source_id=r.opt_string("access_source_id"),
            error=r.opt_string("error"),
        )


# -- products --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductEntitlement:
    """An entitlement a product grants, as listed in the product catalog."""

    entitlement_id: str
    name: str
    description: str | None

    @classmethod
    def _decode(cls, r: Reader) -> ProductEntitlement:
        return cls(
            entitlement_id=r.string("entitlement_id"),
            name=r.string("name"),
            description=r.opt_string("description"),
        )


@dataclass(frozen=True, slots=True)
class Product:
    """A product of the app: a subscription, a one-time pack or an add-on.

    `price` is in minor units (cents), or `None` when the product has no listed price.
    """

    product_id: str
    name: str
    description: str | None
    price: int | None
    type: str
    recurring_interval: str | None
    app_store_product_id: str | None
    play_store_product_id: str | None
    entitlements: tuple[ProductEntitlement, ...]

    @classmethod
    def _decode(cls, r: Reader) -> Product:
        return cls(
            product_id=r.string("product_id"),
            name=r.string("name"),
            description=r.opt_string("description"),
            price=r.opt_integer("price"),
            type=r.string("type"),
            recurring_interval=r.opt_string("recurring_interval"),
            app_store_product_id=r.opt_string("app_store_product_id"),
            play_store_product_id=r.opt_string("play_store_product_id"),
            entitlements=r.items("entitlements", ProductEntitlement._decode),
        )


def decode_products(r: Reader) -> list[Product]:
    """The answer to `app/products`: `{"products": [Product]}`."""
    if not r.has("products"):
        raise ProtocolError("products: expected a list, got nothing (field absent)")
    return list(r.items("products", Product._decode))


# -- purchases -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """A hosted checkout page: send the customer to `checkout_url`."""

    session_id: str
    checkout_url: str

    @classmethod
    def _decode(cls, r: Reader) -> CheckoutSession:
        return cls(session_id=r.string("session_id"), checkout_url=r.string("checkout_url"))


@dataclass(frozen=True, slots=True)
class PaymentSheet:
    """What a native payment sheet needs to collect a payment."""

    customer_id: str
    customer_ephemeral_key_secret: str
    payment_intent_client_secret: str | None
    subscription_id: str | None
    setup_intent_client_secret: str | None

    @classmethod
    def _decode(cls, r: Reader) -> PaymentSheet:
        return cls(
            customer_id=r.string("customer_id"),
            customer_ephemeral_key_secret=r.string("customer_ephemeral_key_secret"),
            payment_intent_client_secret=r.opt_string("payment_intent_client_secret"),
            subscription_id=r.opt_string("subscription_id"),
            setup_intent_client_secret=r.opt_string("setup_intent_client_secret"),
        )


@dataclass(frozen=True, slots=True)
class PaymentSetup:
    """What a native sheet needs to collect a payment method for later (a trial)."""

    customer_id: str
    ephemeral_key: str
    setup_intent_id: str
    setup_intent_client_secret: str

    @classmethod
    def _decode(cls, r: Reader) -> PaymentSetup:
        return cls(
            customer_id=r.string("customer_id"),
            ephemeral_key=r.string("ephemeral_key"),
            setup_intent_id=r.string("setup_intent_id"),
            setup_intent_client_secret=r.string("setup_intent_client_secret"),
        )


@dataclass(frozen=True, slots=True)
class TrialSubscription:
    """A trial that started directly, with no payment UI needed."""

    subscription_id: str
    status: str
    trial_end: datetime | None

    @classmethod
    def _decode(cls, r: Reader) -> TrialSubscription:
        return cls(
            subscription_id=r.string("subscription_id"),
            status=r.string("status"),
            trial_end=r.opt_timestamp("trial_end"),
        )


def _at_most_one(r: Reader, *keys: str) -> None:
    present = [key for key in keys if r.has(key)]
    if len(present) > 1:
        raise ProtocolError(f"expected at most one of {', '.join(keys)}; got {', '.join(present)}")


@dataclass(frozen=True, slots=True)
class StartPurchaseResult:
    """The answer to `start_purchase`: at most one of `checkout`, `payment_sheet`,
    `setup` and `subscription` is set, depending on the purchase method and product.

    Access is granted when the provider confirms the payment (a webhook on the server);
    call `refresh_entitlements` afterwards to see it.
    """

    purchase_method: str
    product_id: str
    product_type: str
    checkout: CheckoutSession | None
    payment_sheet: PaymentSheet | None
    setup: PaymentSetup | None
    subscription: TrialSubscription | None

    @classmethod
    def _decode(cls, r: Reader) -> StartPurchaseResult:
        _at_most_one(r, "checkout", "payment_sheet", "setup", "subscription")
        return cls(
            purchase_method=r.string("purchase_method"),
            product_id=r.string("product_id"),
            product_type=r.string("product_type"),
            checkout=r.opt_nested("checkout", CheckoutSession._decode),
            payment_sheet=r.opt_nested("payment_sheet", PaymentSheet._decode),
            setup=r.opt_nested("setup", PaymentSetup._decode),
            subscription=r.opt_nested("subscription", TrialSubscription._decode),
        )


@dataclass(frozen=True, slots=True)
class CancelResult:
    """The answer to `cancel_subscription`."""

    success: bool
    status: str
    will_cancel_at_period_end: bool
    cancels_at: datetime | None
    message: str | None

    @classmethod
    def _decode(cls, r: Reader) -> CancelResult:
        return cls(
            success=r.boolean("success"),
            status=r.string("status"),
            will_cancel_at_period_end=r.boolean("will_cancel_at_period_end"),
            cancels_at=r.opt_timestamp("cancels_at"),
            message=r.opt_string("message"),
        )


@dataclass(frozen=True, slots=True)
class UncancelResult:
    """The answer to `uncancel_subscription`."""

    success: bool

    @classmethod
    def _decode(cls, r: Reader) -> UncancelResult:
        return cls(success=r.boolean("success"))


@dataclass(frozen=True, slots=True)
class ChangePlanResult:
    """The answer to `change_plan`: what kind of change, billed when, effective when."""

    success: bool
    change_type: str
    billing_mode: str
    status: str
    effective_at: datetime
    message: str | None

    @classmethod
    def _decode(cls, r: Reader) -> ChangePlanResult:
        return cls(
            success=r.boolean("success"),
            change_type=r.string("change_type"),
            billing_mode=r.string("billing_mode"),
            status=r.string("status"),
            effective_at=r.timestamp("effective_at"),
            message=r.opt_string("message"),
        )


@dataclass(frozen=True, slots=True)
class AttachPaymentMethodResult:
    """The answer to `attach_payment_method`: a checkout page or a payment sheet."""

    mode: str
    checkout: CheckoutSession | None
    payment_sheet: PaymentSheet | None

    @classmethod
    def _decode(cls, r: Reader) -> AttachPaymentMethodResult:
        return cls(
            mode=r.string("mode"),
            checkout=r.opt_nested("checkout", CheckoutSession._decode),
            payment_sheet=r.opt_nested("payment_sheet", PaymentSheet._decode),
        )


# -- server API ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerToken:
    """A short-lived customer token minted by the server API for one customer of one app.

    Hand `token` to the client SDK (its `customer_token_supplier` returns it).
    """

    token: str
    expires_at: datetime

    @classmethod
    def _decode(cls, r: Reader) -> CustomerToken:
        return cls(token=r.string("token"), expires_at=r.timestamp("expires_at"))
