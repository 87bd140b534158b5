"""What every command shares: the common options, argument types, the handler's shape.

Imports nothing heavy: `revenipe --help` builds every parser, so the modules that build
them load only the standard library. A handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from revenipe.engine.errors import InvariantViolation

if TYPE_CHECKING:
    from revenipe.embedded import Backend

# The value of revenipe.storage.database.DEFAULT_DATABASE_URL (a test holds them equal),
# written here because importing storage loads SQLAlchemy and psycopg.
DEFAULT_DATABASE_URL = "sqlite:///./revenipe.db"

EXIT_BROKEN_INVARIANT = 1
EXIT_BAD_INPUT = 2

Outcome = tuple[Any, str, int]
"""What a handler returns: the JSON-able result, the human text, the exit status."""

Handler = Callable[[argparse.Namespace, "Backend | None"], Outcome]


class CommandError(Exception):
    """Bad command-line input, reported with exit status 2."""


def require_backend(backend: Backend | None) -> Backend:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    return backend


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time such as 2026-12-31T00:00:00Z: {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. a trailing Z): {text!r}")
    return moment


_INTEGER = re.compile(r"-?[0-9]{1,40}")


def parse_int(text: str) -> int:
    # Only plain integers: "5.0", "1e3", "true" are refused, not coerced.
    if not _INTEGER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return int(text)


def common_options() -> argparse.ArgumentParser:
    """`--database-url` and `--json`, accepted before the command and after it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help=f"database URL (default: $REVENIPE_DATABASE_URL or {DEFAULT_DATABASE_URL})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return common
