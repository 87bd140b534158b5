"""`revenipe sandbox advance|clock`: a sandbox app's test clock."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import CommandError, Outcome, parse_int, require_backend

if TYPE_CHECKING:
    from revenipe.embedded import Backend
    from revenipe.services.purchases.sandbox.clock import ClockState


def add_sandbox(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `sandbox` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    sandbox = commands.add_parser("sandbox", help="a sandbox app's test clock").add_subparsers(
        dest="sandbox_command", required=True, metavar="SUBCOMMAND"
    )
    advance = sandbox.add_parser(
        "advance",
        parents=[common],
        help="move a sandbox app's clock forward (renewals, trial ends, expiry follow)",
    )
    advance.add_argument("--app", required=True)
    advance.add_argument("--days", type=parse_int, default=0)
    advance.add_argument("--hours", type=parse_int, default=0)
    advance.add_argument("--seconds", type=parse_int, default=0)
    advance.set_defaults(handler=_sandbox_advance)
    clock = sandbox.add_parser("clock", parents=[common], help="a sandbox app's current time")
    clock.add_argument("--app", required=True)
    clock.set_defaults(handler=_sandbox_clock)


def _clock_result(state: ClockState) -> Outcome:
    from revenipe.wire.apps import clock_to_wire

    result = clock_to_wire(state)
    return result, f"{state.app_id}: now {result['now']}", 0


def _sandbox_advance(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.services.purchases.sandbox.clock import advance_clock

    backend = require_backend(backend)
    if min(args.days, args.hours, args.seconds) < 0:
        raise CommandError("time only moves forward: --days, --hours and --seconds are >= 0")
    seconds = args.days * 86_400 + args.hours * 3_600 + args.seconds
    return _clock_result(advance_clock(backend.context, args.app, seconds))


def _sandbox_clock(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    from revenipe.services.purchases.sandbox.clock import clock

    return _clock_result(clock(require_backend(backend).context, args.app))
