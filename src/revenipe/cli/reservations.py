"""`revenipe reservations hold|settle|release|show` (docs/concepts/reservations.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import Outcome, parse_int, require_backend

if TYPE_CHECKING:
    from revenipe.embedded import Backend


def add_reservations(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `reservations` and its subcommands."""
    reservations = commands.add_parser(
        "reservations", help="hold usage, then settle or release it"
    ).add_subparsers(dest="reservations_command", required=True, metavar="SUBCOMMAND")
    hold = reservations.add_parser(
        "hold", parents=[common], help="hold an amount (all or nothing, like a track)"
    )
    hold.add_argument("--app", required=True)
    hold.add_argument("--customer", required=True, help="the app's external id")
    hold.add_argument("--id", required=True, help="entitlement id or usage key")
    hold.add_argument("--value", required=True, type=parse_int)
    hold.add_argument("--ttl-seconds", type=parse_int, help="1 to 86400 (default 600)")
    hold.add_argument("--access-source-id")
    hold.add_argument("--idempotency-key")
    hold.set_defaults(handler=_hold)

    settle = reservations.add_parser(
        "settle", parents=[common], help="consume the actual amount; the rest goes back"
    )
    settle.add_argument("--app", required=True)
    settle.add_argument("--reservation", required=True)
    settle.add_argument("--value", required=True, type=parse_int, help="0 releases")
    settle.set_defaults(handler=_settle)

    for name, handler, help_text in (
        ("release", _release, "give the whole hold back"),
        ("show", _show, "a reservation's state and amounts"),
    ):
        sub = reservations.add_parser(name, parents=[common], help=help_text)
        sub.add_argument("--app", required=True)
        sub.add_argument("--reservation", required=True)
        sub.set_defaults(handler=handler)


def _hold(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.reservations import hold_to_wire

    result = (
        require_backend(backend)
        .app(args.app)
        .reserve(
            args.customer,
            args.id,
            args.value,
            ttl_seconds=args.ttl_seconds,
            access_source_id=args.access_source_id,
            idempotency_key=args.idempotency_key,
        )
    )
    wire = hold_to_wire(result)
    text = (
        f"held {result.held} of {args.id} as {result.reservation_id} until "
        f"{wire['expires_at']}: {result.remaining} remaining"
        if result.success
        else f"refused ({result.error}): {result.remaining} remaining of {args.id}"
    )
    return wire, text, 0


def _close_text(verb: str, wire: dict[str, Any]) -> str:
    if not wire["success"]:
        return f"refused ({wire['error']}): {wire['remaining']} remaining"
    text = f"{verb}: consumed {wire['consumed']}, released {wire['released']}"
    if wire["shortfall"]:
        text += f", short by {wire['shortfall']}"
    return f"{text}; {wire['remaining']} remaining"


def _settle(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.reservations import settle_to_wire

    result = require_backend(backend).app(args.app).settle(args.reservation, args.value)
    wire = settle_to_wire(result)
    return wire, _close_text("settled", dict(wire)), 0


def _release(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.reservations import settle_to_wire

    wire = settle_to_wire(require_backend(backend).app(args.app).release(args.reservation))
    return wire, _close_text("released", dict(wire)), 0


def _show(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.wire.reservations import reservation_to_wire

    wire = reservation_to_wire(require_backend(backend).app(args.app).reservation(args.reservation))
    text = (
        f"reservation {wire['reservation_id']} ({wire['id']}): {wire['state']}, held "
        f"{wire['held']}, consumed {wire['consumed']}, released {wire['released']}, "
        f"expires {wire['expires_at']}"
    )
    return wire, text, 0
