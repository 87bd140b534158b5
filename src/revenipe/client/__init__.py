"""The Revenipe Python SDK: the client protocol for apps, and the server API for backends.

Depends on nothing else in the `revenipe` package (only the standard library and httpx).

Client SDK (public app id; mirrors the published mobile SDK):

    from revenipe.client import Revenipe, RevenipeConfig

    Revenipe.instance.configure(RevenipeConfig(app_id="app_123", base_url=URL))
    await Revenipe.instance.login("user-42")
    result = await Revenipe.instance.track(id="credits", value=1)

`RevenipeSync` is the same API without `await`. `RevenipeServerClient` and
`AsyncRevenipeServerClient` call the server API with a secret key, from the app's own
backend. Every error derives from `RevenipeClientError`.
"""

from revenipe.client._async_client import Revenipe
from revenipe.client._config import CustomerTokenSupplier, RevenipeConfig
from revenipe.client._errors import (
    ApiError,
    AuthenticationError,
    HoldRefusedError,
    InvalidArgumentError,
    NotConfiguredError,
    NotFoundError,
    NotLoggedInError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    RevenipeClientError,
    TransportError,
)
from revenipe.client._models import (
    AttachPaymentMethodResult,
    CancelMode,
    CancelResult,
    ChangePlanResult,
    CheckoutSession,
    Customer,
    CustomerAddOn,
    CustomerBasePlan,
    CustomerEntitlement,
    CustomerSubscription,
    CustomerToken,
    PaymentSetup,
    PaymentSheet,
    PendingChange,
    Product,
    ProductEntitlement,
    PurchaseMethod,
    StartPurchaseResult,
    TrackResult,
    TrialPaymentMethodBehavior,
    TrialSubscription,
    UncancelResult,
    UsageKey,
)
from revenipe.client._reservations import AsyncHold, HoldResult, SettleResult, SyncHold
from revenipe.client._server import AsyncRevenipeServerClient, RevenipeServerClient
from revenipe.client._sync_client import RevenipeSync

__all__ = [
    "ApiError",
    "AsyncHold",
    "AsyncRevenipeServerClient",
    "AttachPaymentMethodResult",
    "AuthenticationError",
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
    "CustomerTokenSupplier",
    "HoldRefusedError",
    "HoldResult",
    "InvalidArgumentError",
    "NotConfiguredError",
    "NotFoundError",
    "NotLoggedInError",
    "PaymentSetup",
    "PaymentSheet",
    "PendingChange",
    "PermissionDeniedError",
    "Product",
    "ProductEntitlement",
    "ProtocolError",
    "PurchaseMethod",
    "RateLimitedError",
    "Revenipe",
    "RevenipeClientError",
    "RevenipeConfig",
    "RevenipeServerClient",
    "RevenipeSync",
    "SettleResult",
    "StartPurchaseResult",
    "SyncHold",
    "TrackResult",
    "TransportError",
    "TrialPaymentMethodBehavior",
    "TrialSubscription",
    "UncancelResult",
    "UsageKey",
]

# Public objects report this package as their home (as httpx does), not private modules.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
