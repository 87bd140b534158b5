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

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from revenipe.client._decode import Reader
from revenipe.client._errors import HoldRefusedError, InvalidArgumentError, RevenipeClientError

__all__ = ["AsyncHold", "HoldResult", "SettleResult", "SyncHold"]


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
