"""CSV exports, streamed row by row, safe to open in a spreadsheet.

A text cell that begins with `=`, `+`, `-`, `@` (or a tab or carriage return, which
some spreadsheets skip before reading a formula) is prefixed with `'`, so that an
external id such as `=HYPERLINK(...)` is shown as text, never run as a formula
(OWASP's "CSV injection"). Numbers we write ourselves are left as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A value as a spreadsheet should see it: text that could start a formula is
    prefixed with a quote; None is empty; booleans are `true`/`false`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    text = str(value)
    if text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def csv_rows(rows: Iterable[list[Any]]) -> Iterator[str]:
    """Each row as one line of CSV text (RFC 4180 quoting, CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([safe_cell(value) for value in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
