"""Purchase return URLs: which ones an app may list, and which ones a purchase may use.

Where a checkout sends the customer back is chosen by the client (`success_url`,
`cancel_url`), so without a rule it is an open redirect. The rule
(docs/concepts/purchases.md#return-urls):

- An app lists the URLs it accepts (`return_urls`). An entry matches a URL exactly (a
  query or fragment may follow: `myapp://paid` accepts `myapp://paid?session=...`, which
  goes to the same place), or, written with a trailing `*`, every URL that starts with
  what comes before the `*`.
  Custom schemes are fine (`myapp://paid`, `myapp://*`): that is how a mobile app gets
  its customer back from a hosted checkout.
- Never acceptable, listed or sent: `javascript:`, `data:`, `file:`, `vbscript:` (in any
  case, whatever whitespace or control characters surround or split them), and any URL
  with whitespace or control characters, or without a scheme.
- With no list, an app accepts absolute http(s) URLs, as before lists existed; a custom
  scheme then needs a list.

Codes: a URL that can never be accepted is `invalid_argument` (bad input); a
well-formed URL that the app's list does not accept is `return_url_not_allowed`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from revenipe.engine.errors import ErrorCode, RevenipeError

MAX_URL_LENGTH = 2048
MAX_RETURN_URLS = 50
FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript"})
"""Schemes that run code or read local files where a browser lands on them."""
PREFIX_MARK = "*"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\s]")
"""Control characters and whitespace (Unicode's too): browsers strip or split on them,
which is how `java\\tscript:` slips past a naive check."""
_WEB = frozenset({"http", "https"})


def scheme_of(url: str) -> str | None:
    """The URL's scheme, lower-cased, or None when it has none."""
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


def check_listed(value: Any, field: str = "return_urls") -> str:
    """One entry of an app's list, checked: exact, or a prefix ending in `*`."""
    url = _well_formed(value, field)
    body = url[: -len(PREFIX_MARK)] if url.endswith(PREFIX_MARK) else url
    if PREFIX_MARK in body:
        raise _bad(field, f"{url!r}: '*' may only end an entry (a prefix)")
    scheme = scheme_of(body)
    if scheme in _WEB and url.endswith(PREFIX_MARK):
        # A prefix must name the whole host: `https://example.com*` would also match
        # `https://example.com.evil.test/`.
        rest = body[len(scheme) + 1 :]
        if not rest.startswith("//") or "/" not in rest[2:] or rest[2:].startswith("/"):
            raise _bad(
                field,
                f"{url!r}: an http(s) prefix must include the host and a '/' after it, "
                "such as https://example.com/return/*",
            )
    if len(body) <= len(f"{scheme}:"):
        raise _bad(field, f"{url!r}: a prefix needs more than a scheme")
    return url


def check_list(values: Any) -> tuple[str, ...]:
    """An app's whole list, each entry checked, duplicates dropped, order kept."""
    if not isinstance(values, list | tuple):
        raise _bad("return_urls", "must be a list of URLs")
    if len(values) > MAX_RETURN_URLS:
        raise _bad("return_urls", f"at most {MAX_RETURN_URLS} URLs, got {len(values)}")
    checked = [check_listed(v, f"return_urls[{i}]") for i, v in enumerate(values)]
    return tuple(dict.fromkeys(checked))


def check_return_url(value: Any, field: str, allowed: Sequence[str]) -> str | None:
    """A purchase's `success_url` or `cancel_url` (None when not given), accepted by the
    app's list `allowed`, or by the http(s) rule when the list is empty."""
    if value is None:
        return None
    url = _well_formed(value, field)
    if allowed:
        if any(_matches(url, entry) for entry in allowed):
            return url
        raise RevenipeError(
            ErrorCode.RETURN_URL_NOT_ALLOWED,
            f"{field} is not one of the app's return URLs (PATCH /v1/app return_urls)",
            field=field,
        )
    if scheme_of(url) not in _WEB or not url.split(":", 1)[1].startswith("//"):
        raise RevenipeError(
            ErrorCode.RETURN_URL_NOT_ALLOWED,
            f"{field}: an app without a return URL list accepts absolute http(s) URLs "
            "only; list deep links such as myapp://paid in the app's return_urls",
            field=field,
        )
    return url


def _matches(url: str, entry: str) -> bool:
    if entry.endswith(PREFIX_MARK):
        return url.startswith(entry[: -len(PREFIX_MARK)])
    if url == entry:
        return True
    # The same destination with a query or fragment (unless the entry names its own).
    if "?" in entry or "#" in entry or not url.startswith(entry):
        return False
    return url[len(entry) : len(entry) + 1] in ("?", "#")


def _well_formed(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise _bad(field, f"must be a URL of 1 to {MAX_URL_LENGTH} characters")
    if _UNSAFE.search(value):
        raise _bad(field, "must not contain whitespace or control characters")
    scheme = scheme_of(value)
    if scheme is None:
        raise _bad(field, "must be an absolute URL with a scheme, such as https:// or myapp://")
    if scheme in FORBIDDEN_SCHEMES:
        raise _bad(field, f"{scheme}: URLs are never accepted as return URLs")
    return value


def _bad(field: str, message: str) -> RevenipeError:
    return RevenipeError(ErrorCode.INVALID_ARGUMENT, f"{field}: {message}", field=field)
