"""`revenipe webhooks create|list|update|delete|test|rotate-secret|deliveries|redeliver`:
an app's outbound webhook endpoints (docs/concepts/webhooks-out.md).

The CLI writes to the database directly; the servers' delivery workers send. Private
and plain-http targets need `--allow-private-webhooks` here as on `revenipe serve`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from revenipe.engine.errors import InvariantViolation

if TYPE_CHECKING:
    from revenipe.embedded import Backend
    from revenipe.services.outbound.targets import TargetPolicy


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `webhooks` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    webhooks = commands.add_parser(
        "webhooks", help="outbound webhooks: where an app's events are sent"
    ).add_subparsers(dest="webhooks_command", required=True, metavar="SUBCOMMAND")

    def sub(name: str, help_text: str, handler: Any, *, endpoint: bool = True) -> Any:
        parser = webhooks.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("--app", required=True)
        if endpoint:
            parser.add_argument("--endpoint", required=True, metavar="ENDPOINT_ID")
        parser.set_defaults(handler=handler)
        return parser

    create = sub(
        "create", "a new endpoint (its signing secret is shown once)", _create, endpoint=False
    )
    create.add_argument("--url", required=True)
    create.add_argument(
        "--event-type",
        action="append",
        dest="event_types",
        metavar="TYPE",
        help="repeat for each type; default: every type",
    )
    create.add_argument("--description")
    create.add_argument("--allow-private-webhooks", action="store_true")
    sub("list", "the app's endpoints", _list, endpoint=False)
    update = sub("update", "change an endpoint", _update)
    update.add_argument("--url")
    update.add_argument("--event-type", action="append", dest="event_types", metavar="TYPE")
    update.add_argument("--enable", action="store_true", default=None)
    update.add_argument("--disable", action="store_true", default=None)
    update.add_argument("--allow-private-webhooks", action="store_true")
    sub("delete", "delete an endpoint and its deliveries", _delete)
    sub("test", "send a ping event to an endpoint", _ping)
    sub("rotate-secret", "a new signing secret (the old one signs too for 24 h)", _rotate)
    deliveries = sub("deliveries", "an endpoint's deliveries and attempts", _deliveries)
    deliveries.add_argument("--limit", type=int, default=20)
    redeliver = sub("redeliver", "send a delivery again", _redeliver, endpoint=False)
    redeliver.add_argument("--delivery", required=True, metavar="DELIVERY_ID")


def _backend(backend: Backend | None) -> Backend:
    if backend is None:
        raise InvariantViolation("a command that needs the database gets an open backend")
    return backend


def _policy(args: argparse.Namespace) -> TargetPolicy:
    from revenipe.services.outbound.targets import TargetPolicy

    private = bool(getattr(args, "allow_private_webhooks", False))
    return TargetPolicy(allow_private=private, require_https=not private)


def _create(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints
    from revenipe.wire import webhooks_out as wire

    created = endpoints.create_endpoint(
        _backend(backend).context,
        args.app,
        _policy(args),
        args.url,
        args.event_types,
        args.description,
    )
    result = wire.endpoint_created_to_wire(created.endpoint, created.secret)
    text = (
        f"endpoint {created.endpoint.id} -> {created.endpoint.url!r}\n"
        f"signing secret (shown once, keep it): {created.secret}"
    )
    return result, text, 0


def _list(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints
    from revenipe.wire import webhooks_out as wire

    rows = endpoints.list_endpoints(_backend(backend).context, args.app)
    lines = [
        f"{r.id} {'enabled' if r.enabled else 'disabled'} {r.url!r}"
        + (f" ({r.disabled_reason!r})" if r.disabled_reason else "")
        for r in rows
    ]
    return wire.endpoint_list_to_wire(rows), "\n".join(lines) or "no endpoints", 0


def _update(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints
    from revenipe.wire import webhooks_out as wire

    changes: dict[str, Any] = {}
    if args.url is not None:
        changes["url"] = args.url
    if args.event_types:
        changes["event_types"] = args.event_types
    if args.enable or args.disable:
        changes["enabled"] = bool(args.enable)
    row = endpoints.update_endpoint(
        _backend(backend).context, args.app, _policy(args), args.endpoint, **changes
    )
    return wire.endpoint_to_wire(row), f"endpoint {row.id} updated", 0


def _delete(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints

    endpoints.delete_endpoint(_backend(backend).context, args.app, args.endpoint)
    return {"deleted": args.endpoint}, f"endpoint {args.endpoint} deleted", 0


def _ping(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints

    event_id = endpoints.send_ping(_backend(backend).context, args.app, args.endpoint)
    return {"event_id": event_id}, f"ping {event_id} queued (a running server sends it)", 0


def _rotate(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints
    from revenipe.wire import webhooks_out as wire

    created = endpoints.rotate_secret(_backend(backend).context, args.app, args.endpoint)
    result = wire.endpoint_created_to_wire(created.endpoint, created.secret)
    return result, f"new signing secret (shown once, keep it): {created.secret}", 0


def _deliveries(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints
    from revenipe.wire import webhooks_out as wire

    limit = max(1, min(1000, args.limit))
    views = endpoints.list_deliveries(
        _backend(backend).context, args.app, args.endpoint, before_id=None, limit=limit
    )
    page = wire.delivery_page_to_wire(views, limit)
    lines = [
        f"{d['id']} {d['event_type']} {d['status']} attempts={len(d['attempts'])}"
        for d in page["deliveries"]
    ]
    return page, "\n".join(lines) or "no deliveries", 0


def _redeliver(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    from revenipe.services.outbound import endpoints

    endpoints.redeliver(_backend(backend).context, args.app, args.delivery)
    return {"redelivered": args.delivery}, f"delivery {args.delivery} queued again", 0
