"""`revenipe serve`: first-start setup, then uvicorn with N worker processes."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from revenipe.cli.common import Outcome, parse_int, require_backend

if TYPE_CHECKING:
    from revenipe.embedded import Backend


def add_serve(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `serve` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    serve = commands.add_parser("serve", parents=[common], help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=parse_int, default=8080)
    serve.add_argument(
        "--catalog",
        metavar="FILE",
        help="catalog for the app created on first start (or the only app)",
    )
    serve.add_argument("--workers", type=parse_int, default=1)
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
    serve.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        help="outbound webhooks may target loopback and private addresses over plain http "
        "(tests and local development only)",
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, backend: Backend | None) -> Outcome:
    prepare_and_serve(require_backend(backend), args)
    return None, "", 0


def prepare_and_serve(backend: Backend, args: argparse.Namespace) -> None:
    """Create the first app if the database has none, say how to reach it, then serve."""
    from revenipe.catalog.loader import catalog_from_file
    from revenipe.services.apps import TokenPolicy

    if args.workers < 1 or args.workers > 64:
        raise SystemExit("--workers must be from 1 to 64")
    catalog = catalog_from_file(args.catalog) if args.catalog else None
    apps = backend.list_apps()
    if not apps:
        created = backend.create_app("Default app", catalog, sandbox=args.sandbox)
        _say(f"Created app {created.app.id}")
        if args.sandbox:
            _say("  a sandbox app: sandbox checkout pages, and a test clock")
        _say(f"  secret key (shown once, keep it): {created.secret_key}")
        apps = [created.app]
    elif catalog is not None:
        if len(apps) != 1:
            raise SystemExit(
                "--catalog applies to the only app; this database has "
                f"{len(apps)}: use `revenipe catalog apply --app APP_ID FILE`"
            )
        applied = backend.app(apps[0].id).apply_catalog(catalog)
        _say(
            f"Catalog version {applied.version} "
            f"{'applied' if applied.changed else 'unchanged'} for app {apps[0].id}"
        )
    elif args.sandbox and not all(app.sandbox for app in apps):
        raise SystemExit(
            "--sandbox makes the app created on first start a sandbox app; this database "
            "has a live app already (create a sandbox app with `revenipe apps create --sandbox`)"
        )
    for app in apps:
        kind = " (sandbox: test clock, sandbox checkout)" if app.sandbox else ""
        _say(f"App {app.id} ({app.name}): token policy {app.token_policy}{kind}")
        if app.token_policy == TokenPolicy.OPEN.value:
            _say(
                f"  WARNING: app {app.id} runs the open token policy: anyone who knows its "
                "app id can read and spend any customer's balance"
            )
    _say_dashboard(backend, args)
    backend.close()
    _say(
        f"Serving on http://{args.host}:{args.port} with {args.workers} worker(s); "
        "Ctrl-C stops after in-flight requests finish"
    )

    import uvicorn

    os.environ["REVENIPE_DATABASE_URL"] = args.database_url
    if args.public_url:
        os.environ["REVENIPE_PUBLIC_URL"] = args.public_url
    if args.allow_private_webhooks:
        os.environ["REVENIPE_ALLOW_PRIVATE_WEBHOOKS"] = "1"
    if args.workers > 1:
        # The workers' PostgreSQL write lanes add up: one each (ServerSettings), unless
        # the environment says otherwise.
        os.environ.setdefault("REVENIPE_POSTGRES_WRITE_LANES", "1")
    uvicorn.run(
        "revenipe.server.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=30,
        access_log=False,
        log_level="warning",
        server_header=False,
        # httptools with a bound on the request head (uvicorn sets none).
        http="revenipe.server.http_limits:BoundedHttpToolsProtocol",
    )


FIRST_LINK_TTL_SECONDS = 24 * 3600


def _say_dashboard(backend: Backend, args: argparse.Namespace) -> None:
    """The dashboard's address; while no operator exists, a one-time link that creates
    the first one (a new one at each start until then)."""
    from revenipe.cli.operators import link_url
    from revenipe.services import operators as operator_service

    base = args.public_url or f"http://{args.host}:{args.port}"
    if operator_service.has_operators(backend.context):
        _say(f"Dashboard: {base.rstrip('/')}/dashboard/")
        return
    issued = operator_service.create_sign_in_link(
        backend.context, ttl_seconds=FIRST_LINK_TTL_SECONDS
    )
    _say(f"Dashboard set-up link (one use, 24 hours): {link_url(base, issued)}")
    _say("  it creates the first operator; later: `revenipe dashboard link`")


def _say(text: str) -> None:
    print(text, flush=True)
