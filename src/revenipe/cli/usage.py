"""A customer's balance and the ledger: `customers show`, `grant`, `track`, `check`,
`reverse`, `verify`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import (
    EXIT_BROKEN_INVARIANT,
    CommandError,
    Handler,
    Outcome,
    parse_int,
    parse_time,
    require_backend,
)

if TYPE_CHECKING:
    from revenipe.embedded import Backend


def add_usage(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `customers`, `grant`, `track`, `check` and `reverse` (in this order)."""
    customers = commands.add_parser("customers", help="show a customer").add_subparsers(
        dest="customers_command", required=True, metavar="SUBCOMMAND"
    )
    show = customers.add_parser(
        "show", parents=[common], help="a customer's state (client protocol Customer shape)"
    )
    show.add_argument("--app", required=True)
    show.add_argument("--customer", required=True, help="the app's external id")
    show.set_defaults(handler=_customers_show)

    grant = commands.add_parser(
        "grant", parents=[common], help="grant a product or an entitlement amount"
    )
    grant.add_argument("--app", required=True)
    grant.add_argument("--customer", required=True, help="the app's external id")
    what = grant.add_mutually_exclusive_group(required=True)
    what.add_argument("--product")
    what.add_argument("--entitlement")
    grant.add_argument("--amount", type=parse_int)
    grant.add_argument("--expires-at", type=parse_time, metavar="TIME")
    grant.add_argument("--priority", type=parse_int)
    grant.set_defaults(handler=_grant)

    metered: tuple[tuple[str, Handler, str], ...] = (
        ("track", _track, "consume usage"),
        ("check", _check, "would a track succeed? (changes nothing)"),
    )
    for name, handler, help_text in metered:
        sub = commands.add_parser(name, parents=[common], help=help_text)
        sub.add_argument("--app", required=True)
        sub.add_argument("--customer", required=True, help="the app's external id")
        sub.add_argument("--id", required=True, help="entitlement id or usage key")
        sub.add_argument("--value", required=True, type=parse_int)
        sub.add_argument("--access-source-id")
        if name == "track":
            sub.add_argument("--idempotency-key")
        sub.set_defaults(handler=handler)

    reverse = commands.add_parser(
        "reverse", parents=[common], help="give back what a usage event consumed"
    )
    reverse.add_argument("--app", required=True)
    reverse.add_argument("--usage-event", required=True)
    reverse.add_argument("--amount", type=parse_int, help="default: all that is left")
    reverse.add_argument("--idempotency-key")
    reverse.set_defaults(handler=_reverse)


def add_verify(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `verify` on the CLI's subcommands."""
    verify = commands.add_parser("verify", parents=[common], help="check ledger invariants")
    verify.add_argument("--app")
    verify.set_defaults(handler=_verify)


def _customers_show(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.customers import customer_to_wire

    wire = customer_to_wire(require_backend(backend).app(args.app).state(args.customer))
    lines = [f"customer {args.customer} (client_id {wire['client_id']})"]
    lines += [
        f"  {k['key_id']}: {k['remaining']} remaining (usage key)" for k in wire["usage_keys"]
    ]
    lines += [
        f"  {e['entitlement_id']}: {e['remaining']} remaining ({e['type']}, source "
        f"{e['access_source_id']}, expires {e['expires_at'] or 'never'})"
        for e in wire["entitlements"]
    ]
    return wire, "\n".join(lines), 0


def _grant(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.customers import grant_to_wire

    app = require_backend(backend).app(args.app)
    if args.product:
        if args.amount is not None:
            raise CommandError("--amount goes with --entitlement, not --product")
        granted = app.grant_product(
            args.customer, args.product, expires_at=args.expires_at, priority=args.priority
        )
    else:
        granted = app.grant_entitlement(
            args.customer,
            args.entitlement,
            args.amount,
            expires_at=args.expires_at,
            priority=args.priority,
        )
    return grant_to_wire(granted), f"granted: access source {granted.access_source_id}", 0


def _track(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.usage import track_recorded_to_wire

    result = (
        require_backend(backend)
        .app(args.app)
        .track(
            args.customer,
            args.id,
            args.value,
            access_source_id=args.access_source_id,
            idempotency_key=args.idempotency_key,
        )
    )
    text = (
        f"tracked {result.consumed} of {result.entitlement_id}: {result.remaining} remaining"
        if result.success
        else f"refused ({result.error}): {result.remaining} remaining of {result.entitlement_id}"
    )
    return track_recorded_to_wire(result), text, 0


def _check(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.usage import check_to_wire

    result = (
        require_backend(backend)
        .app(args.app)
        .check(args.customer, args.id, args.value, access_source_id=args.access_source_id)
    )
    wire = check_to_wire(result)
    text = (
        f"would succeed: {result.requested} of {result.available} available"
        if result.would_succeed
        else f"would be refused: {result.error}"
    )
    text += "".join(
        f"\n  {d['amount']} from grant {d['grant_id']} ({d['entitlement_id']})"
        for d in wire["draws"]
    )
    return wire, text, 0


def _reverse(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.usage import reversal_to_wire

    result = (
        require_backend(backend)
        .app(args.app)
        .reverse(args.usage_event, args.amount, idempotency_key=args.idempotency_key)
    )
    text = f"reversed {result.amount} (total {result.total_reversed})"
    return reversal_to_wire(result), text, 0


def _verify(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.ledger import verified_to_wire

    backend = require_backend(backend)
    if args.app:
        backend.app(args.app)
    report = backend.verify(args.app)
    result = verified_to_wire(report)
    summary = (
        f"{report.checked_grants} grants, {report.checked_entries} ledger entries, "
        f"{report.checked_usage_events} usage events"
    )
    text = (
        f"ok: {summary}"
        if report.ok
        else "BROKEN:\n" + "\n".join(f"  {p}" for p in report.problems) + f"\n({summary})"
    )
    return result, text, 0 if report.ok else EXIT_BROKEN_INVARIANT
