"""`revenipe operators create|list` and `revenipe dashboard link`: who may sign in to the
dashboard, and one-time sign-in links (docs/adr/0020)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import CommandError, Outcome, parse_int, require_backend

if TYPE_CHECKING:
    from revenipe.embedded import Backend
    from revenipe.services.operators import IssuedLink

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def add_operators(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `operators` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    operators = commands.add_parser(
        "operators", help="dashboard operators (server-wide accounts)"
    ).add_subparsers(dest="operators_command", required=True, metavar="SUBCOMMAND")
    create = operators.add_parser(
        "create",
        parents=[common],
        help="create an operator; the password is prompted for, read from standard input "
        "when it is not a terminal, or generated with --generate",
    )
    create.add_argument("--email", required=True)
    create.add_argument(
        "--generate", action="store_true", help="generate a password and print it once"
    )
    create.add_argument(
        "--time-zone", default="UTC", help="IANA time zone the dashboard shows times in"
    )
    create.set_defaults(handler=_create)
    listing = operators.add_parser("list", parents=[common], help="list operators")
    listing.set_defaults(handler=_list)


def add_dashboard(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `dashboard` on the CLI's subcommands."""
    dashboard = commands.add_parser("dashboard", help="the operator dashboard").add_subparsers(
        dest="dashboard_command", required=True, metavar="SUBCOMMAND"
    )
    link = dashboard.add_parser(
        "link",
        parents=[common],
        help="print a one-time sign-in link (with no operator yet: a link that creates the "
        "first one)",
    )
    link.add_argument("--ttl", type=parse_int, default=600, metavar="SECONDS")
    link.add_argument(
        "--base-url",
        help="the server's address as your browser reaches it "
        f"(default: $REVENIPE_PUBLIC_URL or {DEFAULT_BASE_URL})",
    )
    link.add_argument("--email", help="the operator to sign in (needed when there are several)")
    link.set_defaults(handler=_link)


def _create(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.services import operators as operator_service

    context = require_backend(backend).context
    generated = args.generate
    password = operator_service.generate_password() if generated else _read_password()
    operator = operator_service.create_operator(
        context, args.email, password, time_zone=args.time_zone
    )
    result: dict[str, Any] = {
        "operator_id": operator.id,
        "email": operator.email,
        "time_zone": operator.time_zone,
    }
    text = f"operator {operator.email} ({operator.id}) created"
    if generated:
        result["password"] = password
        text += f"\npassword (shown once, keep it): {password}"
    return result, text, 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CommandError("no password on standard input (or use --generate)")
        return line
    first = getpass.getpass("Password (at least 10 characters): ")
    if getpass.getpass("Password again: ") != first:
        raise CommandError("the two passwords differ")
    return first


def _list(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.services import operators as operator_service

    rows = operator_service.list_operators(require_backend(backend).context)
    result = {
        "operators": [
            {
                "operator_id": row.id,
                "email": row.email,
                "time_zone": row.time_zone,
                "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
            }
            for row in rows
        ]
    }
    text = "\n".join(f"{row.id}  {row.email}  {row.time_zone}" for row in rows) or "no operators"
    return result, text, 0


def _link(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.services import operators as operator_service

    context = require_backend(backend).context
    issued = operator_service.create_sign_in_link(context, args.email, ttl_seconds=args.ttl)
    url = link_url(args.base_url, issued)
    result = {
        "url": url,
        "operator_email": issued.operator_email,
        "expires_at": issued.expires_at.isoformat().replace("+00:00", "Z"),
    }
    who = issued.operator_email or "a new operator (this server has none yet)"
    return result, f"{url}\n(one use, for {who}, until {result['expires_at']})", 0


def link_url(base_url: str | None, issued: IssuedLink) -> str:
    from revenipe.dashboard.rendering import PREFIX

    base = (base_url or os.environ.get("REVENIPE_PUBLIC_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CommandError("--base-url must start with http:// or https://")
    return f"{base}{PREFIX}/link/{issued.token}"
