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
        "--database", choices=sorted(_DATABASES), default="both", help="default: both"
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
    bench.set_defaults(handler=handle, needs_database=False)


def handle(args: argparse.Namespace, _backend: object) -> tuple[Any, str, int]:
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
