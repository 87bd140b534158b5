"""`revenipe catalog validate|apply`: check a catalog file, or apply it to an app."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import Outcome, require_backend

if TYPE_CHECKING:
    from revenipe.embedded import Backend


def add_catalog(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `catalog` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    catalog = commands.add_parser("catalog", help="validate or apply a catalog file")
    catalog_commands = catalog.add_subparsers(
        dest="catalog_command", required=True, metavar="SUBCOMMAND"
    )
    validate = catalog_commands.add_parser(
        "validate", parents=[common], help="check a catalog file"
    )
    validate.add_argument("file")
    validate.set_defaults(handler=_catalog_validate, needs_database=False)
    apply = catalog_commands.add_parser(
        "apply", parents=[common], help="apply a catalog file to an app"
    )
    apply.add_argument("--app", required=True)
    apply.add_argument("file")
    apply.set_defaults(handler=_catalog_apply)


def _catalog_validate(args: argparse.Namespace, _: Backend | None) -> Outcome:
    from revenipe.catalog.loader import catalog_from_file
    from revenipe.wire.catalog import catalog_valid_to_wire

    result = catalog_valid_to_wire(catalog_from_file(args.file))
    text = (
        f"valid: {result['entitlements']} entitlements, {result['usage_keys']} usage "
        f"keys, {result['products']} products"
    )
    return result, text, 0


def _catalog_apply(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.catalog.loader import catalog_from_file
    from revenipe.wire.catalog import catalog_applied_to_app_to_wire

    app = require_backend(backend).app(args.app)
    applied = app.apply_catalog(catalog_from_file(args.file))
    result = catalog_applied_to_app_to_wire(args.app, applied)
    text = (
        f"catalog version {applied.version} applied"
        if applied.changed
        else f"unchanged: version {applied.version} is identical"
    )
    return result, text, 0
