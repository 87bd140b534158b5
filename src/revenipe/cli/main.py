"""`revenipe` command line. Every command takes `--database-url` (or the environment
variable REVENIPE_DATABASE_URL; default sqlite:///./revenipe.db) and `--json`.

Exit status: 0 on success (a refused track is a success of the command: it prints
`success: false`), 1 when `verify` finds a broken invariant, 2 on bad input or a
missing app, customer or file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from revenipe import __version__
from revenipe.cli.apps import add_apps, add_tokens
from revenipe.cli.catalog import add_catalog
from revenipe.cli.common import (
    DEFAULT_DATABASE_URL,
    EXIT_BAD_INPUT,
    EXIT_BROKEN_INVARIANT,
    CommandError,
    Handler,
    common_options,
)
from revenipe.cli.operators import add_dashboard, add_operators
from revenipe.cli.reservations import add_reservations
from revenipe.cli.revenuecat import add_parser as add_revenuecat
from revenipe.cli.sandbox import add_sandbox
from revenipe.cli.serve import add_serve
from revenipe.cli.stripe import add_parser as add_stripe
from revenipe.cli.usage import add_usage, add_verify
from revenipe.cli.webhooks import add_parser as add_webhooks
from revenipe.engine.errors import RevenipeError

if TYPE_CHECKING:
    from revenipe.embedded import Backend

__all__ = ["EXIT_BAD_INPUT", "EXIT_BROKEN_INVARIANT", "CommandError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="revenipe",
        parents=[common],
        description="Usage-based entitlements: credits, limits and feature access.",
    )
    parser.add_argument("--version", action="version", version=f"revenipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Building the parsers loads no heavy module: each handler imports what it needs.
    add_apps(commands, common)
    add_catalog(commands, common)
    add_usage(commands, common)
    add_reservations(commands, common)
    add_tokens(commands, common)
    add_serve(commands, common)
    add_sandbox(commands, common)
    add_verify(commands, common)

    from revenipe.bench.cli import add_parser as add_bench

    add_bench(commands)
    add_stripe(commands, common)
    add_revenuecat(commands, common)
    add_webhooks(commands, common)
    add_operators(commands, common)
    add_dashboard(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    url = (
        getattr(args, "database_url", None)
        or os.environ.get("REVENIPE_DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )
    backend: Backend | None = None
    args.database_url = url
    try:
        if getattr(args, "needs_database", True):
            from revenipe.embedded import open as open_backend

            backend = open_backend(url)
        handler: Handler = args.handler
        result, text, status = handler(args, backend)
    except RevenipeError as exc:
        # A CatalogError comes from the loader, so when `exc` is one this import is free.
        from revenipe.catalog.loader import CatalogError

        if isinstance(exc, CatalogError):
            from revenipe.wire.common import catalog_problems_to_wire

            problems = catalog_problems_to_wire(exc)
            return _fail(as_json, "invalid_catalog", str(exc), problems=problems)
        return _fail(as_json, exc.code.value, exc.message)
    except CommandError as exc:
        return _fail(as_json, "invalid_argument", str(exc))
    finally:
        if backend is not None:
            backend.close()
    if result is not None or text:
        try:
            print(json.dumps(result, indent=2) if as_json else text, flush=True)
        except BrokenPipeError:  # e.g. `revenipe ... | head`: the reader left early
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


def _fail(as_json: bool, code: str, message: str, **extra: Any) -> int:
    if as_json:
        from revenipe.wire.common import error_body

        print(json.dumps(error_body(code, message, **extra), indent=2), file=sys.stderr)
    else:
        print(f"error ({code}): {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
