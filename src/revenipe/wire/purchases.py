"""Purchases: the client protocol's purchase answers (start, cancel, uncancel, change
plan, attach a payment method) and the sandbox's confirmed intents.

Optional members of a purchase answer are left out, not sent as null (at most one of
them is set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NotRequired

from revenipe.wire.common import OMITTED, Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.purchases.sandbox.checkout import Completion
    from revenipe.services.purchases.vocabulary import (
        AttachOutcome,
        CancelOutcome,
        CheckoutSession,
        DirectSubscription,
        PaymentSetup,
        PaymentSheet,
        PlanChangeOutcome,
        StartedPurchase,
    )


class CheckoutOut(TypedDict):
    session_id: str
    checkout_url: str


class PaymentSheetOut(TypedDict):
    customer_id: str
    customer_ephemeral_key_secret: str
    payment_intent_client_secret: NotRequired[Annotated[str | None, OMITTED]]
    subscription_id: NotRequired[Annotated[str | None, OMITTED]]
    setup_intent_client_secret: NotRequired[Annotated[str | None, OMITTED]]


class PaymentSetupOut(TypedDict):
    customer_id: str
    ephemeral_key: str
    setup_intent_id: str
    setup_intent_client_secret: str


class DirectSubscriptionOut(TypedDict):
    subscription_id: str
    status: str
    trial_end: NotRequired[Annotated[Timestamp | None, OMITTED]]


class StartPurchaseOut(TypedDict):
    """At most one of checkout, payment_sheet, setup and subscription is present."""

    purchase_method: str
    product_id: str
    product_type: str
    checkout: NotRequired[Annotated[CheckoutOut | None, OMITTED]]
    payment_sheet: NotRequired[Annotated[PaymentSheetOut | None, OMITTED]]
    setup: NotRequired[Annotated[PaymentSetupOut | None, OMITTED]]
    subscription: NotRequired[Annotated[DirectSubscriptionOut | None, OMITTED]]


class CancelOut(TypedDict):
    success: bool
    status: str
    will_cancel_at_period_end: bool
    cancels_at: Timestamp | None
    message: str | None


class UncancelOut(TypedDict):
    success: bool


class ChangePlanOut(TypedDict):
    success: bool
    change_type: str
    billing_mode: str
    status: str
    effective_at: Timestamp
    message: str | None


class AttachPaymentMethodOut(TypedDict):
    mode: str
    checkout: NotRequired[Annotated[CheckoutOut | None, OMITTED]]
    payment_sheet: NotRequired[Annotated[PaymentSheetOut | None, OMITTED]]


class IntentConfirmed(TypedDict):
    id: str
    status: str
    access_source_id: str | None


def started_purchase_to_wire(started: StartedPurchase) -> StartPurchaseOut:
    out: StartPurchaseOut = {
        "purchase_method": started.purchase_method,
        "product_id": started.product_id,
        "product_type": started.product_type,
    }
    if started.checkout is not None:
        out["checkout"] = _checkout(started.checkout)
    if started.payment_sheet is not None:
        out["payment_sheet"] = _payment_sheet(started.payment_sheet)
    if started.setup is not None:
        out["setup"] = _setup(started.setup)
    if started.subscription is not None:
        out["subscription"] = _direct_subscription(started.subscription)
    return out


def cancel_to_wire(outcome: CancelOutcome) -> CancelOut:
    return {
        "success": outcome.success,
        "status": outcome.status,
        "will_cancel_at_period_end": outcome.will_cancel_at_period_end,
        "cancels_at": timestamp(outcome.cancels_at),
        "message": outcome.message,
    }


def uncancel_to_wire() -> UncancelOut:
    return {"success": True}


def plan_change_to_wire(outcome: PlanChangeOutcome) -> ChangePlanOut:
    return {
        "success": outcome.success,
        "change_type": outcome.change_type,
        "billing_mode": outcome.billing_mode,
        "status": outcome.status,
        "effective_at": timestamp(outcome.effective_at),
        "message": outcome.message,
    }


def attach_to_wire(outcome: AttachOutcome) -> AttachPaymentMethodOut:
    out: AttachPaymentMethodOut = {"mode": outcome.mode}
    if outcome.checkout is not None:
        out["checkout"] = _checkout(outcome.checkout)
    if outcome.payment_sheet is not None:
        out["payment_sheet"] = _payment_sheet(outcome.payment_sheet)
    return out


_INTENT_STATUS = {"complete": "succeeded", "failed": "requires_payment_method"}


def intent_confirmed_to_wire(done: Completion) -> IntentConfirmed:
    """A confirmed sandbox intent, in Stripe's words for its status."""
    return {
        "id": done.session_id,
        "status": _INTENT_STATUS[done.status],
        "access_source_id": done.access_source_id,
    }


def _checkout(session: CheckoutSession) -> CheckoutOut:
    return {"session_id": session.session_id, "checkout_url": session.checkout_url}


def _payment_sheet(sheet: PaymentSheet) -> PaymentSheetOut:
    out: PaymentSheetOut = {
        "customer_id": sheet.customer_id,
        "customer_ephemeral_key_secret": sheet.customer_ephemeral_key_secret,
    }
    if sheet.payment_intent_client_secret is not None:
        out["payment_intent_client_secret"] = sheet.payment_intent_client_secret
    if sheet.subscription_id is not None:
        out["subscription_id"] = sheet.subscription_id
    if sheet.setup_intent_client_secret is not None:
        out["setup_intent_client_secret"] = sheet.setup_intent_client_secret
    return out


def _setup(setup: PaymentSetup) -> PaymentSetupOut:
    return {
        "customer_id": setup.customer_id,
        "ephemeral_key": setup.ephemeral_key,
        "setup_intent_id": setup.setup_intent_id,
        "setup_intent_client_secret": setup.setup_intent_client_secret,
    }


def _direct_subscription(direct: DirectSubscription) -> DirectSubscriptionOut:
    out: DirectSubscriptionOut = {
        "subscription_id": direct.subscription_id,
        "status": direct.status,
    }
    if direct.trial_end is not None:
        out["trial_end"] = timestamp(direct.trial_end)
    return out
