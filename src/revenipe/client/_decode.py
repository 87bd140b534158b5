"""Strict decoding of JSON answers, as the published mobile SDK's hard casts demand
(docs/concepts/client-protocol.md#decoding-rules-we-keep).

"Required" means present, non-null and of exactly the JSON type: an integer field holding
`5.0` or `true` is rejected, as is a string where an object belongs. Every failure raises
`ProtocolError` naming the field path (`entitlements[1].remaining`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from revenipe.client._errors import ProtocolError

T = TypeVar("T")

_MISSING = object()


def _describe(value: Any) -> str:
    if value is _MISSING:
        return "nothing (field absent)"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r:.60}"


class Reader:
    """Typed, path-aware access to one JSON object of an answer."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, dict):
            raise ProtocolError(f"{path or 'answer'}: expected an object, got {_describe(data)}")
        self._data: dict[str, Any] = data
        self._path = path

    def _where(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _fail(self, key: str, expected: str, value: Any) -> ProtocolError:
        return ProtocolError(f"{self._where(key)}: expected {expected}, got {_describe(value)}")

    def string(self, key: str) -> str:
        """A required string."""
        value = self._data.get(key, _MISSING)
        if type(value) is not str:
            raise self._fail(key, "a string", value)
        return value

    def opt_string(self, key: str) -> str | None:
        """A string that may be null or absent."""
        value = self._data.get(key)
        if value is None:
            return None
        if type(value) is not str:
            raise self._fail(key, "a string or null", value)
        return value

    def integer(self, key: str) -> int:
        """A required JSON integer (never a float, never a boolean)."""
        value = self._data.get(key, _MISSING)
        if type(value) is not int:
            raise self._fail(key, "an integer", value)
        return value

    def opt_integer(self, key: str) -> int | None:
        """An integer that may be null or absent."""
        value = self._data.get(key)
        if value is None:
            return None
        if type(value) is not int:
            raise self._fail(key, "an integer or null", value)
        return value

    def boolean(self, key: str) -> bool:
        """A required JSON boolean."""
        value = self._data.get(key, _MISSING)
        if type(value) is not bool:
            raise self._fail(key, "a boolean", value)
        return value

    def timestamp(self, key: str) -> datetime:
        """A required ISO-8601 timestamp, as a timezone-aware UTC datetime."""
        value = self._data.get(key, _MISSING)
        if type(value) is not str:
            raise self._fail(key, "an ISO-8601 timestamp", value)
        return self._parse_timestamp(key, value)

    def opt_timestamp(self, key: str) -> datetime | None:
        """A timestamp that may be null or absent."""
        value = self._data.get(key)
        if value is None:
            return None
        if type(value) is not str:
            raise self._fail(key, "an ISO-8601 timestamp or null", value)
        return self._parse_timestamp(key, value)

    def _parse_timestamp(self, key: str, value: str) -> datetime:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise self._fail(key, "an ISO-8601 timestamp", value) from None
        # A timestamp without offset is read as UTC (the protocol's clock), never as local.
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

    def opt_nested(self, key: str, decode: Callable[[Reader], T]) -> T | None:
        """A nested object that may be null or absent, decoded by `decode`."""
        value = self._data.get(key)
        if value is None:
            return None
        return decode(Reader(value, self._where(key)))

    def items(self, key: str, decode: Callable[[Reader], T]) -> tuple[T, ...]:
        """A list of objects; absent means empty (the protocol's rule for the five lists)."""
        value = self._data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self._fail(key, "a list", value)
        return tuple(
            decode(Reader(item, f"{self._where(key)}[{i}]")) for i, item in enumerate(value)
        )

    def raw(self) -> dict[str, Any]:
        """The object as decoded JSON, for answers the SDK does not model."""
        return self._data

    def has(self, key: str) -> bool:
        """Whether `key` is present with a non-null value."""
        return self._data.get(key) is not None
