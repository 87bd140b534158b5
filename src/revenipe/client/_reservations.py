"""Reservations in the client SDK: hold an estimate, do the work, settle the actual
amount (docs/concepts/reservations.md).

    async with Revenipe.instance.reserve(id="credits", value=100) as hold:
        image = await generate()            # the work of unknown cost
        await hold.settle(image.cost)       # the rest of the 100 goes back

Entering holds (all or nothing, like a track); a refusal raises `HoldRefusedError` and
the block does not run. An exception in the block releases the hold, and so does a
block that ends without `settle` or `release`: an unsettled hold is given back, never
charged (release is the safe default). If even the release cannot reach the server,
the hold still ends by itself when its TTL runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from revenipe.client._core import (
    IDEMPOTENCY_KEY_HEADER,
    Call,
    path,
    require_amount,
    require_id,
    require_optional_id,
    without_none,
)
from revenipe.client._decode import Reader
from revenipe.client._errors import HoldRefusedError, InvalidArgumentError, RevenipeClientError

__all__ = [
    "AsyncHold",
    "AsyncServerReservations",
    "HoldResult",
    "ServerReservations",
    "SettleResult",
    "SyncHold",
]

T = TypeVar("T")
JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class HoldResult:
    """The answer to a hold. `success=False` is a refusal: nothing was held."""

    success: bool
    reservation_id: str | None
    held: int
    remaining: int
    """What is left of the id after the hold."""
    expires_at: datetime | None
    error: str | None

    @classmethod
    def _decode(cls, r: Reader) -> HoldResult:
        return cls(
            success=r.boolean("success"),
            reservation_id=r.opt_string("reservation_id"),
            held=r.integer("held"),
            remaining=r.integer("remaining"),
            expires_at=r.opt_timestamp("expires_at"),
            error=r.opt_string("error"),
        )


@dataclass(frozen=True, slots=True)
class SettleResult:
    """The answer to a settle or a release. `success=False` with `reservation_closed`:
    the reservation had already closed the other way (released or expired, or settled)."""

    success: bool
    consumed: int
    released: int
    shortfall: int
    """What was asked beyond the hold and could not be paid (the hold was consumed)."""
    remaining: int
    usage_event_id: str | None
    error: str | None

    @classmethod
    def _decode(cls, r: Reader) -> SettleResult:
        return cls(
            success=r.boolean("success"),
            consumed=r.integer("consumed"),
            released=r.integer("released"),
            shortfall=r.integer("shortfall"),
            remaining=r.integer("remaining"),
            usage_event_id=r.opt_string("usage_event_id"),
            error=r.opt_string("error"),
        )


class AsyncHold:
    """A hold as an async context manager (`Revenipe.reserve`): held on entry, released
    on an exception or when the block ends unsettled."""

    def __init__(
        self,
        hold: Callable[[], Awaitable[HoldResult]],
        close: Callable[[str, int | None], Awaitable[SettleResult]],
    ) -> None:
        """Made by `Revenipe.reserve`: `hold` holds, `close(id, value)` settles (None:
        releases)."""
        self._hold = hold
        self._close = close
        self.result: HoldResult | None = None
        """The hold's answer, once entered."""
        self.closed: SettleResult | None = None
        """The settle's or release's answer, once closed."""

    @property
    def reservation_id(self) -> str:
        """The reservation's id (only inside the block)."""
        if self.result is None or self.result.reservation_id is None:
            raise InvalidArgumentError("the hold is not held: use it inside `async with`")
        return self.result.reservation_id

    async def settle(self, value: int) -> SettleResult:
        """Consume `value` (0 releases); the rest of the hold goes back."""
        self.closed = await self._close(self.reservation_id, value)
        return self.closed

    async def release(self) -> SettleResult:
        """Give the whole hold back."""
        self.closed = await self._close(self.reservation_id, None)
        return self.closed

    async def __aenter__(self) -> AsyncHold:
        result = await self._hold()
        if not result.success:
            raise HoldRefusedError(result.error or "refused", result.remaining)
        self.result = result
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed is not None:
            return
        try:
            self.closed = await self._close(self.reservation_id, None)
        except RevenipeClientError:
            if exc is None:
                raise
            # The block's own exception matters more; the hold ends with its TTL anyway.


class SyncHold:
    """`AsyncHold` without `await` (`RevenipeSync.reserve`, a `with` block)."""

    def __init__(
        self,
        hold: Callable[[], HoldResult],
        close: Callable[[str, int | None], SettleResult],
    ) -> None:
        """Made by `RevenipeSync.reserve`: `hold` holds, `close(id, value)` settles (None:
        releases)."""
        self._hold = hold
        self._close = close
        self.result: HoldResult | None = None
        """The hold's answer, once entered."""
        self.closed: SettleResult | None = None
        """The settle's or release's answer, once closed."""

    @property
    def reservation_id(self) -> str:
        """The reservation's id (only inside the block)."""
        if self.result is None or self.result.reservation_id is None:
            raise InvalidArgumentError("the hold is not held: use it inside `with`")
        return self.result.reservation_id

    def settle(self, value: int) -> SettleResult:
        """Consume `value` (0 releases); the rest of the hold goes back."""
        self.closed = self._close(self.reservation_id, value)
        return self.closed

    def release(self) -> SettleResult:
        """Give the whole hold back."""
        self.closed = self._close(self.reservation_id, None)
        return self.closed

    def __enter__(self) -> SyncHold:
        result = self._hold()
        if not result.success:
            raise HoldRefusedError(result.error or "refused", result.remaining)
        self.result = result
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed is not None:
            return
        try:
            self.closed = self._close(self.reservation_id, None)
        except RevenipeClientError:
            if exc is None:
                raise


# -- the server client's reservations (secret key) ----------------------------------------


def _json_object(r: Reader) -> JSONObject:
    return r.raw()


def _optional_int(name: str, value: object, *, minimum: int) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class _ReservationCalls:
    @staticmethod
    def hold(
        external_id: str,
        id: str,
        value: int,
        ttl_seconds: int | None,
        access_source_id: str | None,
        idempotency_key: str | None,
    ) -> Call[JSONObject]:
        require_id("external_id", external_id)
        body = without_none(
            id=require_id("id", id),
            value=require_amount("value", value),
            ttl_seconds=_optional_int("ttl_seconds", ttl_seconds, minimum=1),
            access_source_id=require_optional_id("access_source_id", access_source_id),
        )
        key = require_optional_id("idempotency_key", idempotency_key) or str(uuid.uuid4())
        return Call(
            "POST",
            path("v1", "customers", external_id, "reservations"),
            _json_object,
            body=body,
            headers={IDEMPOTENCY_KEY_HEADER: key},
        )

    @staticmethod
    def close_reservation(reservation_id: str, value: int | None) -> Call[JSONObject]:
        # Safe to resend: the first close's answer is replayed.
        require_id("reservation_id", reservation_id)
        if value is None:
            return Call("POST", path("v1", "reservations", reservation_id, "release"), _json_object)
        body = {"value": _optional_int("value", value, minimum=0)}
        return Call(
            "POST", path("v1", "reservations", reservation_id, "settle"), _json_object, body=body
        )

    @staticmethod
    def get_reservation(reservation_id: str) -> Call[JSONObject]:
        require_id("reservation_id", reservation_id)
        return Call("GET", path("v1", "reservations", reservation_id), _json_object)


class ServerReservations:
    """The server client's reservation calls (`RevenipeServerClient` inherits them)."""

    def _execute(self, call: Call[T]) -> T:
        raise NotImplementedError

    def hold(
        self,
        external_id: str,
        id: str,
        value: int,
        *,
        ttl_seconds: int | None = None,
        access_source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSONObject:
        """Holds `value` of `id` for the customer until settled, released or
        `ttl_seconds` (default 600) pass (docs/concepts/reservations.md). Carries an
        idempotency key (a fresh uuid4 unless given), reused on retries."""
        return self._execute(
            _ReservationCalls.hold(
                external_id, id, value, ttl_seconds, access_source_id, idempotency_key
            )
        )

    def settle_reservation(self, reservation_id: str, value: int) -> JSONObject:
        """Consumes the actual amount of a hold (0 releases it); the rest goes back."""
        return self._execute(_ReservationCalls.close_reservation(reservation_id, value))

    def release_reservation(self, reservation_id: str) -> JSONObject:
        """Gives a whole hold back."""
        return self._execute(_ReservationCalls.close_reservation(reservation_id, None))

    def get_reservation(self, reservation_id: str) -> JSONObject:
        """A reservation's state (`held`, `settled`, `released`, `expired`) and amounts."""
        return self._execute(_ReservationCalls.get_reservation(reservation_id))


class AsyncServerReservations:
    """The async server client's reservation calls (`AsyncRevenipeServerClient`)."""

    async def _execute(self, call: Call[T]) -> T:
        raise NotImplementedError

    async def hold(
        self,
        external_id: str,
        id: str,
        value: int,
        *,
        ttl_seconds: int | None = None,
        access_source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSONObject:
        """Holds `value` of `id` for the customer until settled, released or
        `ttl_seconds` (default 600) pass (docs/concepts/reservations.md). Carries an
        idempotency key (a fresh uuid4 unless given), reused on retries."""
        return await self._execute(
            _ReservationCalls.hold(
                external_id, id, value, ttl_seconds, access_source_id, idempotency_key
            )
        )

    async def settle_reservation(self, reservation_id: str, value: int) -> JSONObject:
        """Consumes the actual amount of a hold (0 releases it); the rest goes back."""
        return await self._execute(_ReservationCalls.close_reservation(reservation_id, value))

    async def release_reservation(self, reservation_id: str) -> JSONObject:
        """Gives a whole hold back."""
        return await self._execute(_ReservationCalls.close_reservation(reservation_id, None))

    async def get_reservation(self, reservation_id: str) -> JSONObject:
        """A reservation's state (`held`, `settled`, `released`, `expired`) and amounts."""
        return await self._execute(_ReservationCalls.get_reservation(reservation_id))
