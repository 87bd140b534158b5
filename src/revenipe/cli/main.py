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
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from revenipe.catalog import CatalogError
from revenipe.catalog.loader import catalog_from_file
from revenipe.embedded import Backend
from revenipe.embedded import open as open_backend
from revenipe.engine.errors import RevenipeError
from revenipe.services.apps import set_token_policy
from revenipe.services.purchases.sandbox import clock as clock_service
from revenipe.services.tokens import mint_customer_token
from revenipe.storage.database import DEFAULT_DATABASE_URL
from revenipe.wire import customer_to_wire, timestamp

EXIT_BROKEN_INVARIANT = 1
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """Bad command-line input, reported with exit status 2."""


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time such as 2026-12-31T00:00:00Z: {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. a trailing Z): {text!r}")
    return moment


_INTEGER = re.compile(r"-?[0-9]{1,40}")


def _parse_int(text: str) -> int:
    # Only plain integers: "5.0", "1e3", "true" are refused, not coerced.
    if not _INTEGER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return int(text)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help=f"database URL (default: $REVENIPE_DATABASE_URL or {DEFAULT_DATABASE_URL})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="revenipe",
        parents=[common],
        description="Usage-based entitlements: credits, limits and feature access.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    create.set_defaults(handler=_apps_create)
    listing = apps.add_parser("list", parents=[common], help="list apps")
    listing.set_defaults(handler=_apps_list)

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
    grant.add_argument("--amount", type=_parse_int)
    grant.add_argument("--expires-at", type=_parse_time, metavar="TIME")
    grant.add_argument("--priority", type=_parse_int)
    grant.set_defaults(handler=_grant)

    for name, handler, help_text in (
        ("track", _track, "consume usage"),
        ("check", _check, "would a track succeed? (changes nothing)"),
    ):
        sub = commands.add_parser(name, parents=[common], help=help_text)
        sub.add_argument("--app", required=True)
        sub.add_argument("--customer", required=True, help="the app's external id")
        sub.add_argument("--id", required=True, help="entitlement id or usage key")
        sub.add_argument("--value", required=True, type=_parse_int)
        sub.add_argument("--access-source-id")
        if name == "track":
            sub.add_argument("--idempotency-key")
        sub.set_defaults(handler=handler)

    reverse = commands.add_parser(
        "reverse", parents=[common], help="give back what a usage event consumed"
    )
    reverse.add_argument("--app", required=True)
    reverse.add_argument("--usage-event", required=True)
    reverse.add_argument("--amount", type=_parse_int, help="default: all that is left")
    reverse.add_argument("--idempotency-key")
    reverse.set_defaults(handler=_reverse)

    update = apps.add_parser("update", parents=[common], help="change an app's settings")
    update.add_argument("--app", required=True)
    update.add_argument("--token-policy", choices=["enforce", "open"], required=True)
    update.set_defaults(handler=_apps_update)

    tokens = commands.add_parser("tokens", help="customer tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="SUBCOMMAND"
    )
    mint = tokens.add_parser("mint", parents=[common], help="mint a customer token")
    mint.add_argument("--app", required=True)
    mint.add_argument("--customer", required=True, help="the app's external id")
    mint.add_argument("--ttl", type=_parse_int, metavar="SECONDS", help="default 3600")
    mint.set_defaults(handler=_tokens_mint)

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_parse_int, default=8080)
    serve.add_argument(
        "--catalog",
        metavar="FILE",
        help="catalog for the app created on first start (or the only app)",
    )
    serve.add_argument("--workers", type=_parse_int, default=1)
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="make the app created on first start a sandbox app (sandbox checkout, test clock)",
    )
    serve.add_argument(
        "--public-url",
        help="this server's address as browsers reach it (sandbox checkout pages); "
        "default: the address of each request",
    )
    serve.set_defaults(handler=_serve)

    sandbox = commands.add_parser("sandbox", help="a sandbox app's test clock").add_subparsers(
        dest="sandbox_command", required=True, metavar="SUBCOMMAND"
    )
    advance = sandbox.add_parser(
        "advance",
        parents=[common],
        help="move a sandbox app's clock forward (renewals, trial ends, expiry follow)",
    )
    advance.add_argument("--app", required=True)
    advance.add_argument("--days", type=_parse_int, default=0)
    advance.add_argument("--hours", type=_parse_int, default=0)
    advance.add_argument("--seconds", type=_parse_int, default=0)
    advance.set_defaults(handler=_sandbox_advance)
    clock = sandbox.add_parser("clock", parents=[common], help="a sandbox app's current time")
    clock.add_argument("--app", required=True)
    clock.set_defaults(handler=_sandbox_clock)

    verify = commands.add_parser("verify", parents=[common], help="check ledger invariants")
    verify.add_argument("--app")
    verify.set_defaults(handler=_verify)

    from revenipe.bench.cli import add_parser as add_bench_parser
    from revenipe.cli.revenuecat import add_parser as add_revenuecat_parser
    from revenipe.cli.stripe import add_parser as add_stripe_parser

    add_bench_parser(commands)
    add_stripe_parser(commands, common)
    add_revenuecat_parser(commands, common)
    return parser


# --- handlers: each returns (json-able result, human text) -----------------------------

Handler = Callable[[argparse.Namespace, Backend | None], tuple[Any, str, int]]


def _apps_create(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    catalog = catalog_from_file(args.catalog) if args.catalog else None
    created = backend.create_app(args.name, catalog, sandbox=args.sandbox)
    result = {
        "app_id": created.app.id,
        "secret_key": created.secret_key,
        "catalog_version": created.app.catalog_version,
        "sandbox": created.app.sandbox,
    }
    text = (
        f"app id:     {created.app.id}\nsecret key: {created.secret_key}\n"
        "(the secret key is shown only now: keep it)"
    )
    return result, text, 0


def _apps_list(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    apps = [
        {
            "app_id": a.id,
            "name": a.name,
            "token_policy": a.token_policy,
            "catalog_version": a.catalog_version,
            "sandbox": a.sandbox,
            "created_at": timestamp(a.created_at),
        }
        for a in backend.list_apps()
    ]
    text = "\n".join(f"{a['app_id']}  {a['name']}" for a in apps) or "no apps"
    return {"apps": apps}, text, 0


def _apps_update(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    app = set_token_policy(backend.context, args.app, args.token_policy)
    result = {"app_id": app.id, "name": app.name, "token_policy": app.token_policy}
    return result, f"{app.id}: token policy {app.token_policy}", 0


def _tokens_mint(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    minted = mint_customer_token(backend.context, args.app, args.customer, args.ttl)
    result = {
        "token": minted.token,
        "client_id": minted.customer_id,
        "expires_at": timestamp(minted.expires_at),
    }
    return result, minted.token, 0


def _clock_result(state: clock_service.ClockState) -> tuple[Any, str, int]:
    result = {
        "app_id": state.app_id,
        "now": timestamp(state.now),
        "clock_offset_seconds": state.clock_offset_seconds,
    }
    return result, f"{state.app_id}: now {result['now']}", 0


def _sandbox_advance(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    if min(args.days, args.hours, args.seconds) < 0:
        raise CommandError("time only moves forward: --days, --hours and --seconds are >= 0")
    seconds = args.days * 86_400 + args.hours * 3_600 + args.seconds
    return _clock_result(clock_service.advance_clock(backend.context, args.app, seconds))


def _sandbox_clock(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    return _clock_result(clock_service.clock(backend.context, args.app))


def _serve(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    from revenipe.cli.serve import prepare_and_serve

    prepare_and_serve(backend, args)
    return None, "", 0


def _catalog_validate(args: argparse.Namespace, _: Backend | None) -> tuple[Any, str, int]:
    catalog = catalog_from_file(args.file)
    result = {
        "valid": True,
        "entitlements": len(catalog.entitlements),
        "usage_keys": len(catalog.usage_keys),
        "products": len(catalog.products),
    }
    text = (
        f"valid: {result['entitlements']} entitlements, {result['usage_keys']} usage "
        f"keys, {result['products']} products"
    )
    return result, text, 0


def _catalog_apply(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    applied = backend.app(args.app).apply_catalog(catalog_from_file(args.file))
    result = {"app_id": args.app, "version": applied.version, "changed": applied.changed}
    text = (
        f"catalog version {applied.version} applied"
        if applied.changed
        else f"unchanged: version {applied.version} is identical"
    )
    return result, text, 0


def _customers_show(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    wire = customer_to_wire(backend.app(args.app).state(args.customer))
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


def _grant(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    app = backend.app(args.app)
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
    result = {
        "client_id": granted.customer_id,
        "access_source_id": granted.access_source_id,
        "grant_ids": list(granted.grant_ids),
    }
    return result, f"granted: access source {granted.access_source_id}", 0


def _track(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    result = backend.app(args.app).track(
        args.customer,
        args.id,
        args.value,
        access_source_id=args.access_source_id,
        idempotency_key=args.idempotency_key,
    )
    wire = result.to_wire()
    text = (
        f"tracked {result.consumed} of {result.entitlement_id}: {result.remaining} remaining"
        if result.success
        else f"refused ({result.error}): {result.remaining} remaining of {result.entitlement_id}"
    )
    return {**wire, "usage_event_id": result.usage_event_id}, text, 0


def _check(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    result = backend.app(args.app).check(
        args.customer, args.id, args.value, access_source_id=args.access_source_id
    )
    wire: dict[str, Any] = {
        "would_succeed": result.would_succeed,
        "requested": result.requested,
        "available": result.available,
        "remaining_after": result.remaining_after,
        "entitlement_id": result.entitlement_id,
        "access_source_id": result.access_source_id,
        "error": result.error,
        "draws": [
            {
                "grant_id": d.grant_id,
                "access_source_id": d.access_source_id,
                "entitlement_id": d.entitlement_id,
                "amount": d.amount,
            }
            for d in result.draws
        ],
    }
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


def _reverse(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    result = backend.app(args.app).reverse(
        args.usage_event, args.amount, idempotency_key=args.idempotency_key
    )
    wire = {
        "reversal_id": result.reversal_id,
        "usage_event_id": result.usage_event_id,
        "amount": result.amount,
        "total_reversed": result.total_reversed,
        "credits": [{"grant_id": g, "amount": a} for g, a in result.credits],
    }
    return wire, f"reversed {result.amount} (total {result.total_reversed})", 0


def _verify(args: argparse.Namespace, backend: Backend | None) -> tuple[Any, str, int]:
    assert backend is not None
    if args.app:
        backend.app(args.app)
    report = backend.verify(args.app)
    result = {
        "ok": report.ok,
        "grants": report.checked_grants,
        "ledger_entries": report.checked_entries,
        "usage_events": report.checked_usage_events,
        "problems": report.problems,
    }
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
            backend = open_backend(url)
        handler: Handler = args.handler
        result, text, status = handler(args, backend)
    except CatalogError as exc:
        return _fail(
            as_json,
            "invalid_catalog",
            str(exc),
            problems=[{"path": p.path, "message": p.message} for p in exc.problems],
        )
    except RevenipeError as exc:
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
        print(json.dumps({"code": code, "message": message, **extra}, indent=2), file=sys.stderr)
    else:
        print(f"error ({code}): {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
