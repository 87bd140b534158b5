"""`revenipe bench`: the command line of the benchmark suite."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from revenipe.bench.plan import DEFAULT_POSTGRES_ADMIN_URL, PARTS

_DATABASES = {
    "sqlite": ("sqlite",),
    "postgresql": ("postgresql",),
    "both": ("sqlite", "postgresql"),
}


def add_parser(commands: Any) -> None:
    """Register `bench` on the CLI's subcommands (`commands` is argparse's subparsers)."""
    bench = commands.add_parser(
        "bench",
        help="measure track throughput and latency (see docs/performance.md)",
        description="Measure, side by side in one run and per database: the raw-SQL limit "
        "of one track, tracks through the embedded API (from processes and from 16 threads "
        "of one process), tracks over HTTP against the server's no-op endpoint (1 and 2 "
        "workers, and at 64 connections), and track latency at 10^3 and 10^6 customers. Uses "
        "throw-away databases (SQLite files in a temporary folder; fresh PostgreSQL "
        "databases, dropped at the end).",
    )
    bench.add_argument(
        "--quick", action="store_true", help="about a minute: shorter runs, 10^5 for the scale"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--database",
        choices=sorted(_DATABASES),
        default=None,
        help="default: both (--dashboard: sqlite)",
    )
    bench.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_ADMIN_URL,
        metavar="URL",
        help="a PostgreSQL server where the user may CREATE DATABASE "
        f"(default {DEFAULT_POSTGRES_ADMIN_URL})",
    )
    bench.add_argument(
        "--parts",
        default=",".join(PARTS),
        metavar="LIST",
        help=f"comma-separated parts to run (default: all of {','.join(PARTS)})",
    )
    bench.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load generator: wrk if installed (auto), or the Python fallback",
    )
    bench.add_argument(
        "--dashboard",
        action="store_true",
        help="instead of the parts: time every dashboard page at 10^6 customers and 2x10^6 "
        "ledger entries, in process, against 100 ms (SQLite unless --database says otherwise; "
        "the database is built once and kept, see --cache)",
    )
    bench.add_argument(
        "--customers",
        type=int,
        default=None,
        metavar="N",
        help="--dashboard: customers in the database (default 1,000,000)",
    )
    bench.add_argument(
        "--rounds", type=int, default=7, metavar="N", help="--dashboard: requests per page"
    )
    bench.add_argument(
        "--cache",
        default=".bench-cache",
        metavar="DIR",
        help="--dashboard: where the SQLite database is kept between runs "
        "(PostgreSQL keeps it on the server)",
    )
    bench.set_defaults(handler=handle, needs_database=False)


def handle(args: argparse.Namespace, _backend: object) -> tuple[Any, str, int]:
    if args.dashboard:
        return _handle_dashboard(args)
    args.database = args.database or "both"
    from revenipe.bench.plan import FULL, QUICK
    from revenipe.bench.report import render_text
    from revenipe.bench.runner import Options, run_bench

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise SystemExit(f"--parts: choose among {', '.join(PARTS)} (got {args.parts!r})")
    options = Options(
        plan=QUICK if args.quick else FULL,
        databases=_DATABASES[args.database],
        postgres_url=args.postgres_url,
        parts=parts,
        generator=args.generator,
    )
    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    report = run_bench(options, progress)
    return report, render_text(report), 0


def _handle_dashboard(args: argparse.Namespace) -> tuple[Any, str, int]:
    from pathlib import Path

    from revenipe.bench import dashboard

    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    customers = args.customers or dashboard.DEFAULT_CUSTOMERS
    if customers < 1 or args.rounds < 1:
        raise SystemExit("--customers and --rounds must be at least 1")
    reports: dict[str, Any] = {}
    texts = []
    failed = False
    for kind in _DATABASES[args.database or "sqlite"]:
        if kind == "sqlite":
            built = dashboard.cached_sqlite(Path(args.cache), customers, progress)
        else:
            built = dashboard.cached_postgres(args.postgres_url, customers, progress)
        figures = dashboard.measure(built, args.rounds, progress)
        failed = failed or not all(f.passed for f in figures)
        title = (
            f"{kind}: {built.rows['customers']:,} customers, "
            f"{built.rows['ledger_entries']:,} ledger entries, "
            f"{built.rows['usage_events']:,} usage events; {args.rounds} requests a page, "
            f"server time in process (budget {dashboard.BUDGET_MS:.0f} ms)"
        )
        texts.append(dashboard.render(figures, title))
        reports[kind] = {
            "rows": built.rows,
            "pages": [
                {
                    "page": f.name,
                    "path": f.path,
                    "status": f.status,
                    "median_ms": round(f.median_ms, 2),
                    "max_ms": round(f.max_ms, 2),
                    "passed": f.passed,
                    "whole_export_max_ms": round(max(f.whole_ms), 2) if f.whole_ms else None,
                }
                for f in figures
            ],
        }
    return reports, "\n\n".join(texts), 1 if failed else 0
