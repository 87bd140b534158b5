"""Amounts are integers: positive, bounded, never floats, strings or booleans."""

from __future__ import annotations

import re
from typing import Any

from revenipe.engine.errors import ErrorCode, RevenipeError

MAX_AMOUNT = 2**53 - 1
"""The largest amount anywhere: exact as a JSON number in every client language."""

ID_PATTERN = re.compile(r"^[a-z0-9_.\-]{1,64}$")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")
"""Code points below 32, refused in texts (ids, keys) that logs and pages show."""
"""Catalog ids (entitlements, usage keys, products)."""

MAX_EXTERNAL_ID_LENGTH = 256
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def require_amount(value: Any, *, field: str = "value", allow_zero: bool = False) -> int:
    """Return `value` if it is an integer amount in range, else raise `invalid_value`.

    `bool` is a subclass of `int` in Python; it is refused explicitly, as are floats
    even when integral (`5.0`), and strings (`"5"`).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise RevenipeError(
            ErrorCode.INVALID_VALUE,
            f"{field} must be an integer, got {type(value).__name__} {value!r}",
            field=field,
        )
    low = 0 if allow_zero else 1
    if value < low or value > MAX_AMOUNT:
        raise RevenipeError(
            ErrorCode.INVALID_VALUE,
            f"{field} must be an integer from {low} to {MAX_AMOUNT}, got {value}",
            field=field,
        )
    return value


def require_catalog_id(value: Any, *, field: str) -> str:
    """Return `value` if it is a well-formed catalog id, else raise `invalid_id`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise RevenipeError(
            ErrorCode.INVALID_ID,
            f"{field} must be 1-64 characters of a-z, 0-9, '_', '-', '.', got {value!r}",
            field=field,
        )
    return value


def require_text(value: Any, *, field: str, max_length: int) -> str:
    """Return a non-empty string of at most `max_length` characters, else `invalid_id`."""
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise RevenipeError(
            ErrorCode.INVALID_ID,
            f"{field} must be a non-empty string of at most {max_length} characters",
            field=field,
        )
    if _CONTROL_CHARACTER.search(value):
        raise RevenipeError(
            ErrorCode.INVALID_ID, f"{field} must not contain control characters", field=field
        )
    return value


def require_source_and_key(
    access_source_id: Any, idempotency_key: Any
) -> tuple[str | None, str | None]:
    """The optional access source id and idempotency key of a track or a hold, checked
    alike (None stays None)."""
    if access_source_id is not None:
        access_source_id = require_text(access_source_id, field="access_source_id", max_length=64)
    if idempotency_key is not None:
        idempotency_key = require_text(
            idempotency_key, field="idempotency_key", max_length=MAX_IDEMPOTENCY_KEY_LENGTH
        )
    return access_source_id, idempotency_key
