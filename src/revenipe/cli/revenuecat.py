"""`revenipe revenuecat configure|show|remove`: an app's RevenueCat webhook settings.

The authorization value may come from the environment (REVENIPE_REVENUECAT_AUTHORIZATION)
rather than the command line, so it stays out of the shell's history and the process
list.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError

if TYPE_CHECKING:
    from revenipe.embedded import Backend
    from revenipe.services.purchases.revenuecat import settings as revenuecat_settings

AUTHORIZATION_ENV = "REVENIPE_REVENUECAT_AUTHORIZATION"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `revenuecat` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    revenuecat = commands.add_parser(
        "revenuecat", help="take app store purchases through RevenueCat (see docs/revenuecat.md)"
    ).add_subparsers(dest="revenuecat_command", required=True, metavar="SUBCOMMAND")
    configure = revenuecat.add_parser(
        "configure",
        parents=[common],
        help="set the Authorization value RevenueCat sends with the app's webhook",
        description="Set (or replace) the value. Prefer the environment variable "
        f"{AUTHORIZATION_ENV} to the option: secrets on a command line end up in the "
        "shell's history.",
    )
    configure.add_argument("--app", required=True)
    configure.add_argument(
        "--authorization", metavar="VALUE", help=f"default: ${AUTHORIZATION_ENV}"
    )
    configure.set_defaults(handler=_configure)
    show = revenuecat.add_parser(
        "show", parents=[common], help="whether RevenueCat is set (never the value)"
    )
    show.add_argument("--app", required=True)
    show.set_defaults(handler=_show)
    remove = revenuecat.add_parser(
        "remove", parents=[common], help="forget the app's RevenueCat settings"
    )
    remove.add_argument("--app", required=True)
    remove.set_defaults(handler=_remove)


def _result(status: revenuecat_settings.RevenueCatStatus) -> tuple[Any, str, int]:
    from revenipe.wire.providers import revenuecat_status_to_wire

    result = revenuecat_status_to_wire(status)
    if not status.configured:
        return result, f"{status.app_id}: RevenueCat is not configured", 0
    text = (
        f"{status.app_id}: RevenueCat webhook authorization set\n"
        f"webhook endpoint: <this server's URL>{status.webhook_path}"
    )
    return result, text, 0


def _configure(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    from revenipe.services.purchases.revenuecat import settings as revenuecat_settings

    value = args.authorization or os.environ.get(AUTHORIZATION_ENV) or None
    if value is None:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"give the authorization value (--authorization, or ${AUTHORIZATION_ENV})",
            field="authorization",
        )
    return _result(revenuecat_settings.configure(backend.context, args.app, authorization=value))


def _show(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    from revenipe.services.purchases.revenuecat import settings as revenuecat_settings

    return _result(revenuecat_settings.status(backend.context, args.app))


def _remove(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    from revenipe.services.purchases.revenuecat import settings as revenuecat_settings

    return _result(revenuecat_settings.remove(backend.context, args.app))
