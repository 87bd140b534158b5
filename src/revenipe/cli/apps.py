"""`revenipe apps create|list|update` and `revenipe tokens mint`: apps and their keys."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import Outcome, parse_int, require_backend

if TYPE_CHECKING:
    from revenipe.embedded import Backend


def add_apps(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `apps` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    apps = commands.add_parser("apps", help="create and list apps").add_subparsers(
        dest="apps_command", required=True, metavar="SUBCOMMAND"
    )
    create = apps.add_parser("create", parents=[common], help="create an app")
    create.add_argument("--name", required=True)
    create.add_argument("--catalog", metavar="FILE", help="apply this catalog file")
    create.add_argument(
        "--sandbox",
        action="store_true",
        help="sell through the built-in sandbox (no payment network) and have a test clock",
    )
    create.add_argument(*_RETURN_URL, **_RETURN_URL_OPTIONS)
    create.set_defaults(handler=_apps_create)
    listing = apps.add_parser("list", parents=[common], help="list apps")
    listing.set_defaults(handler=_apps_list)
    update = apps.add_parser("update", parents=[common], help="change an app's settings")
    update.add_argument("--app", required=True)
    update.add_argument("--token-policy", choices=["enforce", "open"])
    update.add_argument(*_RETURN_URL, **_RETURN_URL_OPTIONS)
    update.add_argument(
        "--clear-return-urls",
        action="store_true",
        help="accept any http(s) return URL again (and no custom scheme)",
    )
    update.set_defaults(handler=_apps_update)


_RETURN_URL = ("--return-url",)
_RETURN_URL_OPTIONS: dict[str, Any] = {
    "action": "append",
    "metavar": "URL",
    "dest": "return_urls",
    "help": "a purchase return URL the app accepts, exact or a prefix ending in '*' "
    "(myapp://paid, https://example.com/return/*); repeatable; replaces the list",
}


def add_tokens(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `tokens` on the CLI's subcommands."""
    tokens = commands.add_parser("tokens", help="customer tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="SUBCOMMAND"
    )
    mint = tokens.add_parser("mint", parents=[common], help="mint a customer token")
    mint.add_argument("--app", required=True)
    mint.add_argument("--customer", required=True, help="the app's external id")
    mint.add_argument("--ttl", type=parse_int, metavar="SECONDS", help="default 3600")
    mint.set_defaults(handler=_tokens_mint)


def _apps_create(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.catalog.loader import catalog_from_file
    from revenipe.wire.apps import app_created_to_wire

    backend = require_backend(backend)
    catalog = catalog_from_file(args.catalog) if args.catalog else None
    created = backend.create_app(
        args.name, catalog, sandbox=args.sandbox, return_urls=args.return_urls or ()
    )
    result = app_created_to_wire(created)
    text = (
        f"app id:     {created.app.id}\nsecret key: {created.secret_key}\n"
        "(the secret key is shown only now: keep it)"
    )
    return result, text, 0


def _apps_list(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.apps import app_list_to_wire

    listing = app_list_to_wire(require_backend(backend).list_apps())
    text = "\n".join(f"{a['app_id']}  {a['name']}" for a in listing["apps"]) or "no apps"
    return listing, text, 0


def _apps_update(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.engine.errors import ErrorCode, RevenipeError
    from revenipe.services.apps import get_app, set_return_urls, set_token_policy
    from revenipe.wire.apps import token_policy_set_to_wire

    context = require_backend(backend).context
    if args.return_urls and args.clear_return_urls:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, "give --return-url or --clear-return-urls, not both"
        )
    if args.token_policy is None and not args.return_urls and not args.clear_return_urls:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            "nothing to change: give --token-policy, --return-url or --clear-return-urls",
        )
    if args.return_urls or args.clear_return_urls:
        set_return_urls(context, args.app, args.return_urls or [])
    if args.token_policy is not None:
        set_token_policy(context, args.app, args.token_policy)
    app = get_app(context, args.app)
    urls = ", ".join(app.return_urls) or "any http(s)"
    text = f"{app.id}: token policy {app.token_policy}; return URLs {urls}"
    return token_policy_set_to_wire(app), text, 0


def _tokens_mint(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.services.tokens import mint_customer_token
    from revenipe.wire.customers import token_to_wire

    context = require_backend(backend).context
    minted = mint_customer_token(context, args.app, args.customer, args.ttl)
    result = token_to_wire(minted)
    return result, minted.token, 0
