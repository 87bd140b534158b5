"""`revenipe stripe configure|show|remove`: an app's Stripe settings.

Secrets may come from the environment (REVENIPE_STRIPE_SECRET_KEY,
REVENIPE_STRIPE_WEBHOOK_SECRET) rather than the command line, so they stay out of the
shell's history and the process list.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from revenipe.engine.errors import InvariantViolation

if TYPE_CHECKING:
    from revenipe.embedded import Backend
    from revenipe.services.purchases.stripe import settings as stripe_settings

SECRET_KEY_ENV = "REVENIPE_STRIPE_SECRET_KEY"
WEBHOOK_SECRET_ENV = "REVENIPE_STRIPE_WEBHOOK_SECRET"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `stripe` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    stripe = commands.add_parser(
        "stripe", help="connect a live app to Stripe (see docs/stripe.md)"
    ).add_subparsers(dest="stripe_command", required=True, metavar="SUBCOMMAND")
    configure = stripe.add_parser(
        "configure",
        parents=[common],
        help="set the app's Stripe secret key and webhook signing secret",
        description="Set either or both; what is not given is kept. Prefer the "
        f"environment variables {SECRET_KEY_ENV} and {WEBHOOK_SECRET_ENV} to the "
        "options: secrets on a command line end up in the shell's history.",
    )
    configure.add_argument("--app", required=True)
    configure.add_argument(
        "--secret-key", metavar="KEY", help=f"sk_... or rk_... (default: ${SECRET_KEY_ENV})"
    )
    configure.add_argument(
        "--webhook-secret", metavar="SECRET", help=f"whsec_... (default: ${WEBHOOK_SECRET_ENV})"
    )
    configure.set_defaults(handler=_configure)
    show = stripe.add_parser(
        "show", parents=[common], help="whether Stripe is set (never the secrets)"
    )
    show.add_argument("--app", required=True)
    show.set_defaults(handler=_show)
    remove = stripe.add_parser("remove", parents=[common], help="forget the app's Stripe settings")
    remove.add_argument("--app", required=True)
    remove.set_defaults(handler=_remove)


def _result(status: stripe_settings.StripeStatus) -> tuple[Any, str, int]:
    from revenipe.wire.providers import stripe_status_to_wire

    result = stripe_status_to_wire(status)
    if not status.configured:
        return result, f"{status.app_id}: Stripe is not configured", 0
    text = (
        f"{status.app_id}: Stripe {status.mode} key ...{status.secret_key_last4}, webhook "
        f"secret {'set' if status.webhook_secret_set else 'NOT set'}\n"
        f"webhook endpoint: <this server's URL>{status.webhook_path}"
    )
    return result, text, 0


def _configure(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    from revenipe.services.purchases.stripe import settings as stripe_settings

    status = stripe_settings.configure(
        backend.context,
        args.app,
        secret_key=args.secret_key or os.environ.get(SECRET_KEY_ENV) or None,
        webhook_secret=args.webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV) or None,
    )
    return _result(status)


def _show(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    from revenipe.services.purchases.stripe import settings as stripe_settings

    return _result(stripe_settings.status(backend.context, args.app))


def _remove(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    from revenipe.services.purchases.stripe import settings as stripe_settings

    return _result(stripe_settings.remove(backend.context, args.app))
