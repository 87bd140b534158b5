"""`Revenipe`: the async client SDK (the published mobile SDK's API, in Python;
docs/concepts/client-protocol.md#the-python-client-sdk)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

from revenipe.client._config import RevenipeConfig
from revenipe.client._core import (
    CUSTOMER_TOKEN_HEADER,
    Call,
    base_headers,
    decode_answer,
)
from revenipe.client._errors import InvalidArgumentError, NotConfiguredError
from revenipe.client._models import (
    AttachPaymentMethodResult,
    CancelMode,
    CancelResult,
    ChangePlanResult,
    Customer,
    CustomerEntitlement,
    Product,
    PurchaseMethod,
    StartPurchaseResult,
    TrackResult,
    TrialPaymentMethodBehavior,
    UncancelResult,
    UsageKey,
)
from revenipe.client._reservations import AsyncHold, HoldResult, SettleResult
from revenipe.client._session import (
    ProcessInstance,
    Session,
    anonymous_identity,
    checked_token,
    utc_now,
)
from revenipe.client._transport import AsyncSender, async_transport

__all__ = ["Revenipe"]

T = TypeVar("T")


class Revenipe:
    """The async Revenipe client: log a customer in, track usage, read their access.

    Use the process-wide instance, configured once at start-up:

        Revenipe.instance.configure(RevenipeConfig(app_id="app_123", base_url=URL))
        await Revenipe.instance.login("user-42")
        result = await Revenipe.instance.track(id="credits", value=1)
        if not result.success:
            ...  # block the action or show an upgrade prompt

    or make instances of your own (`Revenipe(config)`, also an async context manager).
    `RevenipeSync` is the same API without `await`.

    The client keeps the logged-in customer's access state locally: `get_entitlement`,
    `get_usage_key` and `has_entitlement` read it without any network call; `login`,
    `refresh_entitlements` and successful tracks update it.

    An instance's connection pool belongs to the event loop that first uses it.
    """

    instance: ProcessInstance[Revenipe] = ProcessInstance()
    """The process-wide client, created unconfigured on first access."""

    def __init__(self, config: RevenipeConfig | None = None) -> None:
        """A client; unconfigured (every network call raises) until `configure`."""
        self._config: RevenipeConfig | None = None
        self._sender: AsyncSender | None = None
        self._retired: list[AsyncSender] = []
        self._session = Session()
        if config is not None:
            self.configure(config)

    # -- configuration -----------------------------------------------------------------

    def configure(self, config: RevenipeConfig) -> None:
        """Sets where and as which app the client talks.

        Reconfiguring for another app id or server forgets the logged-in customer.
        """
        if not isinstance(config, RevenipeConfig):
            raise InvalidArgumentError("configure needs a RevenipeConfig")
        async_transport(config.transport)
        previous = self._config
        if previous is not None and (previous.app_id, previous.base_url) != (
            config.app_id,
            config.base_url,
        ):
            self._session.clear()
        self._retire_sender()
        self._config = config

    @property
    def config(self) -> RevenipeConfig | None:
        """The current configuration, or `None` before `configure`."""
        return self._config

    # -- customer ----------------------------------------------------------------------

    async def login(self, external_id: str) -> Customer:
        """Logs in the customer the app knows as `external_id` (created on first login).

        Returns the customer with their access state, which the client keeps locally.
        """
        return await self._execute(self._session.login_call(external_id))

    async def anonym_login(self) -> Customer:
        """Logs in a new anonymous customer (a random 32-hex-digit external id)."""
        return await self.login(anonymous_identity())

    async def refresh_entitlements(self) -> Customer:
        """Reloads the logged-in customer's access state from the server.

        Raises `NotLoggedInError` before `login`.
        """
        return await self._execute(self._session.refresh_call())

    def clear_session(self) -> None:
        """Forgets the logged-in customer, their local state and their customer token."""
        self._session.clear()

    @property
    def customer(self) -> Customer | None:
        """The logged-in customer's last known state, or `None` before `login`."""
        return self._session.customer

    @property
    def client_id(self) -> str | None:
        """Revenipe's internal id of the logged-in customer."""
        customer = self._session.customer
        return customer.client_id if customer is not None else None

    @property
    def external_id(self) -> str | None:
        """The app's id of the logged-in customer (what `login` was given)."""
        return self._session.external_id

    @property
    def is_logged_in(self) -> bool:
        """Whether a customer is logged in."""
        return self._session.customer is not None

    # -- usage -------------------------------------------------------------------------

    async def track(
        self, id: str, value: int, *, idempotency_key: str | None = None
    ) -> TrackResult:
        """Consumes `value` (a positive integer) of entitlement or usage key `id`.

        A refusal (not enough left, unknown id) is a result with `success=False`, not an
        exception; nothing is consumed and nothing changes locally. On success the local
        `remaining` of `id` is set to the answer's.

        Every call carries an idempotency key (a fresh uuid4 unless one is given), reused
        on automatic retries so a retried track is never charged twice. Pass your own
        key to make retries across restarts safe too.

        Raises `InvalidArgumentError` for a bad `value` and `NotLoggedInError` before
        `login`, both before any network call.
        """
        return await self._execute(self._session.track_call(id, value, idempotency_key))

    def reserve(
        self,
        id: str,
        value: int,
        *,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncHold:
        """A hold of `value` of entitlement or usage key `id`, for work of unknown cost:

            async with client.reserve(id="credits", value=100) as hold:
                ...  # the work
                await hold.settle(37)  # 63 go back

        Entering holds (all or nothing; `HoldRefusedError` if it cannot, and the block
        does not run); an exception in the block, or a block that ends without `settle`
        or `release`, releases the hold. `ttl_seconds` (1 to 86400, default 600): when
        the hold ends by itself. Arguments are checked on entry, before any network call.
        """

        async def hold() -> HoldResult:
            return await self._execute(
                self._session.hold_call(id, value, ttl_seconds, idempotency_key)
            )

        async def close(reservation_id: str, settle_value: int | None) -> SettleResult:
            return await self._execute(self._session.close_call(reservation_id, settle_value))

        return AsyncHold(hold, close)

    def get_entitlement(self, id: str) -> CustomerEntitlement | None:
        """The customer's entitlement `id` from local state (the first source's entry).

        No network call; `None` if the customer does not hold it or nobody is logged in.
        """
        return self._session.get_entitlement(id)

    def get_usage_key(self, id: str) -> UsageKey | None:
        """The customer's usage key `id` from local state (no network call), or `None`."""
        return self._session.get_usage_key(id)

    def has_entitlement(self, id: str) -> bool:
        """Whether the customer holds entitlement `id`, unexpired, in local state.

        No network call. Does not look at `remaining`: a customer with 0 credits left
        still holds their plan's credits entitlement.
        """
        return self._session.has_entitlement(id, utc_now())

    # -- products and purchases --------------------------------------------------------

    async def get_products(self) -> list[Product]:
        """The app's products (needs no login)."""
        return await self._execute(self._session.products_call())

    async def start_purchase(
        self,
        product_id: str,
        *,
        purchase_method: PurchaseMethod = "hosted_checkout",
        trial_payment_method_behavior: TrialPaymentMethodBehavior | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        extra_params: Mapping[str, str] | None = None,
    ) -> StartPurchaseResult:
        """Starts buying `product_id` for the logged-in customer.

        Access arrives once the provider confirms payment; `refresh_entitlements` then
        shows it. Not resent automatically once the request may have reached the server.
        """
        return await self._execute(
            self._session.start_purchase_call(
                product_id,
                purchase_method,
                trial_payment_method_behavior,
                success_url,
                cancel_url,
                extra_params,
            )
        )

    async def cancel_subscription(
        self, source_id: str, *, cancel_mode: CancelMode = "period_end"
    ) -> CancelResult:
        """Cancels subscription `source_id`, at period end (default) or immediately."""
        return await self._execute(self._session.cancel_call(source_id, cancel_mode))

    async def uncancel_subscription(self, source_id: str) -> UncancelResult:
        """Undoes a scheduled cancel of subscription `source_id`."""
        return await self._execute(self._session.uncancel_call(source_id))

    async def change_plan(self, source_id: str, new_product_id: str) -> ChangePlanResult:
        """Moves subscription `source_id` to product `new_product_id`."""
        return await self._execute(self._session.change_plan_call(source_id, new_product_id))

    async def attach_payment_method(
        self,
        access_source_id: str,
        *,
        mode: PurchaseMethod = "hosted_checkout",
        success_url: str | None = None,
        cancel_url: str | None = None,
    ) -> AttachPaymentMethodResult:
        """Collects a payment method for trial `access_source_id`."""
        return await self._execute(
            self._session.attach_payment_method_call(
                access_source_id, mode, success_url, cancel_url
            )
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Closes the connection pool; the client stays configured (a new pool opens on
        the next call)."""
        self._retire_sender()
        await self._close_retired()

    async def __aenter__(self) -> Revenipe:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- sending -----------------------------------------------------------------------

    async def _execute(self, call: Call[T]) -> T:
        sender = await self._current_sender()
        token = await self._customer_token(call.customer, refresh=False)
        response = await sender.send(call, _token_header(token))
        if response.status_code == 401 and token is not None:
            # The token may have expired: ask the supplier once more, then try again.
            token = await self._customer_token(call.customer, refresh=True)
            response = await sender.send(call, _token_header(token))
        return decode_answer(call, response)

    async def _current_sender(self) -> AsyncSender:
        config = self._config
        if config is None:
            raise NotConfiguredError("call Revenipe.instance.configure(RevenipeConfig(...)) first")
        await self._close_retired()
        if self._sender is None:
            self._sender = AsyncSender(
                base_url=config.base_url,
                headers=base_headers(config.app_id, config.default_headers),
                timeout=config.timeout,
                transport=async_transport(config.transport),
                max_retries=config.max_retries,
                retry_backoff=config.retry_backoff,
            )
        return self._sender

    async def _customer_token(self, external_id: str | None, *, refresh: bool) -> str | None:
        supplier = self._config.customer_token_supplier if self._config else None
        if supplier is None or external_id is None:
            return None
        if not refresh:
            cached = self._session.token_for(external_id)
            if cached is not None:
                return cached
        supplied = supplier(external_id)
        token = checked_token(await supplied if inspect.isawaitable(supplied) else supplied)
        self._session.remember_token(external_id, token)
        return token

    def _retire_sender(self) -> None:
        # Closing needs the event loop: the next call (or aclose) does it.
        if self._sender is not None:
            self._retired.append(self._sender)
            self._sender = None

    async def _close_retired(self) -> None:
        while self._retired:
            await self._retired.pop().aclose()


def _token_header(token: str | None) -> dict[str, str]:
    return {CUSTOMER_TOKEN_HEADER: token} if token is not None else {}
