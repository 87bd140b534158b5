"""The bench's output: one JSON-able object, and the same as a readable table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from revenipe.bench.plan import (
    BATCH_ITEMS,
    DECIDED_STATEMENTS,
    GROUP_THREADS,
    GROUPED_DECIDED_STATEMENTS,
    GROUPED_STATEMENTS,
    HTTP_TAIL_CONNECTIONS,
    KEPT_GRANTS_STATEMENTS,
    PARALLEL_STATEMENTS,
    Plan,
)

if TYPE_CHECKING:
    from revenipe.bench.http import HttpSetup

NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
GROUP = f"group_{GROUP_THREADS}_threads"
TAIL = f"track_{HTTP_TAIL_CONNECTIONS}"


@dataclass(frozen=True)
class Target:
    """A bound on one ratio, per database (issue 14's table)."""

    what: str
    comparison: Literal[">=", "<="]
    bounds: dict[str, float]
    """Database kind -> bound."""

    def text(self, kind: str) -> str:
        return f"{self.comparison} {self.bounds[kind]:.2f}"

    def met(self, kind: str, value: float) -> bool:
        bound = self.bounds[kind]
        return value >= bound if self.comparison == ">=" else value <= bound


TARGETS: dict[str, Target] = {
    "inprocess_vs_sql_single": Target(
        "in-process track / raw-SQL limit, throughput, 1 caller each",
        ">=",
        {"sqlite": 0.30, "postgresql": 0.70},
    ),
    "group_vs_sql_single": Target(
        f"in-process track, {GROUP_THREADS} threads of 1 process / raw-SQL limit, 1 caller",
        ">=",
        {"sqlite": 0.40, "postgresql": 2.0},
    ),
    "http_vs_sql_single": Target(
        "HTTP track, 1 worker / raw-SQL limit, 1 caller, throughput",
        ">=",
        {"sqlite": 0.15, "postgresql": 1.0},
    ),
    "http_vs_noop": Target(
        "HTTP track / no-op endpoint, throughput, 1 worker",
        ">=",
        {"sqlite": 0.5, "postgresql": 0.5},
    ),
    "http_2_vs_1_workers": Target(
        "HTTP track throughput, 2 workers / 1 worker",
        ">=",
        {"sqlite": 1.0, "postgresql": 1.5},
    ),
    "hot_vs_random": Target(
        f"in-process track, {GROUP_THREADS} threads: one customer / many customers, throughput",
        ">=",
        {"sqlite": 0.8, "postgresql": 0.8},
    ),
    "http_p99_over_p50": Target(
        f"HTTP track latency at {HTTP_TAIL_CONNECTIONS} connections, 1 worker: p99 / p50",
        "<=",
        {"sqlite": 4.0, "postgresql": 4.0},
    ),
    "scale_1e6_vs_1e3": Target(
        "track p50 latency at the large size / at 10^3",
        "<=",
        {"sqlite": 1.25, "postgresql": 1.25},
    ),
    "track_with_webhooks_vs_without": Target(
        "in-process track, 1 caller: alerts and 3 webhook endpoints / none (issue 16)",
        ">=",
        {"sqlite": 0.9, "postgresql": 0.9},
    ),
}


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if not isinstance(numerator, int | float) or not isinstance(denominator, int | float):
        return None
    return round(numerator / denominator, 3) if denominator else None


def _times(value: Any, factor: int) -> Any:
    return value * factor if isinstance(value, int | float) else None


def _group_ceiling(kind: str, db: dict[str, Any], cpus: int | None) -> float | None:
    """The most `group_vs_sql_single` can reach on this machine, by a track's own
    statements 16 a commit (bench/track_sql.py: revenipe's tables, no revenipe code).

    SQLite writes one transaction at a time whatever the cores, so a batch's writer does
    at most what those statements do from one caller. PostgreSQL's transactions run side
    by side until the machine's cores are busy: every core over the CPU a track's
    statements cost the whole machine (the callers and the server, from the cheaper of
    their 1- and 2-caller runs). An estimate from above: it assumes every core busy at
    that cost, and a track through revenipe runs the same writes with more code around
    them (its batch reads the locks of all its tracks in one statement instead)."""
    single = _get(db, "sql_limit", "single", "throughput_per_s")
    if kind == "sqlite":
        return _ratio(_get(db, "sql_limit", GROUPED_STATEMENTS, "throughput_per_s"), single)
    per_call = [
        _get(db, "sql_limit", name, "machine_cpu_us_per_call")
        for name in (GROUPED_STATEMENTS, PARALLEL_STATEMENTS)
    ]
    known = [value for value in per_call if isinstance(value, int | float) and value > 0]
    if not known or not cpus:
        return None
    return _ratio(cpus * 1e6 / min(known), single)


def _ratios(kind: str, db: dict[str, Any], cpus: int | None) -> dict[str, float | None]:
    def tput(*path: str) -> Any:
        return _get(db, *path, "throughput_per_s")

    return {
        "track_with_webhooks_vs_without": _ratio(
            tput("inprocess", "single_with_3_webhooks"),
            tput("inprocess", "single_without_webhooks"),
        ),
        "inprocess_vs_sql": _ratio(
            tput("inprocess", "concurrent"), tput("sql_limit", "concurrent")
        ),
        "inprocess_vs_sql_single": _ratio(tput("inprocess", "single"), tput("sql_limit", "single")),
        "track_sql_vs_sql_single": _ratio(
            tput("sql_limit", "track_statements"), tput("sql_limit", "single")
        ),
        "inprocess_vs_track_sql": _ratio(
            tput("inprocess", "single"), tput("sql_limit", "track_statements")
        ),
        "track_sql_grouped_vs_sql_single": _ratio(
            tput("sql_limit", GROUPED_STATEMENTS), tput("sql_limit", "single")
        ),
        "track_sql_decided_vs_sql_single": _ratio(
            tput("sql_limit", DECIDED_STATEMENTS), tput("sql_limit", "single")
        ),
        "track_sql_decided_grouped_vs_sql_single": _ratio(
            tput("sql_limit", GROUPED_DECIDED_STATEMENTS), tput("sql_limit", "single")
        ),
        "track_sql_decided_kept_grants_vs_sql_single": _ratio(
            tput("sql_limit", KEPT_GRANTS_STATEMENTS), tput("sql_limit", "single")
        ),
        "track_sql_parallel_vs_sql_single": _ratio(
            tput("sql_limit", PARALLEL_STATEMENTS), tput("sql_limit", "single")
        ),
        "group_vs_track_sql_grouped": _ratio(
            tput("inprocess", GROUP), tput("sql_limit", GROUPED_STATEMENTS)
        ),
        "inprocess_vs_sql_hot": _ratio(tput("inprocess", "hot"), tput("sql_limit", "hot")),
        "group_vs_sql_single": _ratio(tput("inprocess", GROUP), tput("sql_limit", "single")),
        "group_vs_sql_single_ceiling": _group_ceiling(kind, db, cpus),
        "hot_vs_random": _ratio(tput("inprocess", f"{GROUP}_hot"), tput("inprocess", GROUP)),
        # Tracks per second: a batch call answers BATCH_ITEMS of them.
        "batch_vs_single": _ratio(
            _times(tput("inprocess", f"batch_{BATCH_ITEMS}"), BATCH_ITEMS),
            tput("inprocess", "single"),
        ),
        "http_vs_noop": _ratio(
            tput("http", "workers_1", "track"), tput("http", "workers_1", "noop")
        ),
        "http_vs_noop_2_workers": _ratio(
            tput("http", "workers_2", "track"), tput("http", "workers_2", "noop")
        ),
        "http_vs_inprocess_single": _ratio(
            tput("http", "workers_1", "track"), tput("inprocess", "single")
        ),
        "http_vs_sql_single": _ratio(
            tput("http", "workers_1", "track"), tput("sql_limit", "single")
        ),
        "http_2_vs_1_workers": _ratio(
            tput("http", "workers_2", "track"), tput("http", "workers_1", "track")
        ),
        # What the machine leaves a second worker: every core over the cores the
        # 1-worker run kept busy (server, generator, database and the rest). Tracks
        # costing what they cost there, 2 workers cannot exceed it.
        "http_2_vs_1_workers_cpu_ceiling": _ratio(
            _times(cpus, 100), _get(db, "http", "workers_1", "track", "machine_cpu_pct")
        ),
        "http_p99_over_p50": _ratio(
            _get(db, "http", "workers_1", TAIL, "p99_ms"),
            _get(db, "http", "workers_1", TAIL, "p50_ms"),
        ),
        "scale_1e6_vs_1e3": _ratio(
            _get(db, "scale", "large", "p50_ms"), _get(db, "scale", "small", "p50_ms")
        ),
        "scale_1e6_vs_1e3_p99": _ratio(
            _get(db, "scale", "large", "p99_ms"), _get(db, "scale", "small", "p99_ms")
        ),
    }


def build_report(
    *,
    plan: Plan,
    parts: tuple[str, ...],
    machine: dict[str, Any],
    started_at: datetime,
    elapsed_s: float,
    databases: dict[str, dict[str, Any]],
    http_setup: HttpSetup | None,
) -> dict[str, Any]:
    ratios = {kind: _ratios(kind, db, machine.get("cpu_count")) for kind, db in databases.items()}
    p99 = {kind: _get(db, "inprocess", "concurrent", "p99_ms") for kind, db in databases.items()}
    targets: dict[str, dict[str, Any]] = {}
    for kind in databases:
        targets[kind] = {}
        for name, target in TARGETS.items():
            value = ratios[kind][name]
            targets[kind][name] = {
                "what": target.what,
                "value": value,
                "target": target.text(kind),
                "met": None if value is None else target.met(kind, value),
            }
    large = plan.scale_sizes[1]
    notes = []
    if "scale" in parts and large != 1_000_000:
        notes.append(
            f"scale: the large size is {large:,} customers, not 10^6 (plan {plan.name}); "
            "scale_1e6_vs_1e3 compares it with 10^3"
        )
    if http_setup is not None and http_setup.note:
        notes.append(http_setup.note)
    if databases.get("postgresql", {}).get("autovacuum") is False:
        notes.append(
            "postgresql: the server runs without autovacuum: its tables are analyzed only "
            "when the bench settles them (before the HTTP and scale parts); plans made on "
            "statistics of small tables (foreign-key checks included) go stale as the runs "
            "fill them. A server in service should run it"
        )
    notes += _failed_calls(databases)
    return {
        "plan": plan.name,
        "parts": list(parts),
        "started_at": started_at.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "settings": {
            **asdict(plan),
            "group_threads": GROUP_THREADS,
            "http_tail_connections": HTTP_TAIL_CONNECTIONS,
        },
        "http_generator": http_setup.to_json() if http_setup is not None else None,
        "databases": databases,
        "ratios": ratios,
        "p99_ms": p99,
        "targets": targets,
        "notes": notes,
    }


def _failed_calls(databases: dict[str, dict[str, Any]]) -> list[str]:
    """A note per scenario where calls failed or were refused (a hot customer out of
    credits, say): its figures, and the ratios taken from them, are not comparable."""
    notes = []

    def visit(path: list[str], node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "throughput_per_s" in node:
            if node.get("errors") or node.get("refused"):
                notes.append(
                    f"{'.'.join(path)}: {node.get('errors', 0)} calls failed and "
                    f"{node.get('refused', 0)} were refused: its ratios are not comparable"
                )
            return
        for key, child in node.items():
            visit([*path, key], child)

    for kind, db in databases.items():
        visit([kind], db)
    return notes


# --- text ------------------------------------------------------------------------------

_ROWS = (
    ("sql_limit", "single", "raw-SQL limit"),
    ("sql_limit", "concurrent", "raw-SQL limit"),
    ("sql_limit", "hot", "raw-SQL limit"),
    ("sql_limit", "track_statements", "a track's statements"),
    ("sql_limit", GROUPED_STATEMENTS, "a track's statements"),
    ("sql_limit", PARALLEL_STATEMENTS, "a track's statements"),
    ("sql_limit", DECIDED_STATEMENTS, "a track's statements"),
    ("sql_limit", GROUPED_DECIDED_STATEMENTS, "a track's statements"),
    ("sql_limit", KEPT_GRANTS_STATEMENTS, "a track's statements"),
    ("inprocess", "single", "in-process track"),
    ("inprocess", f"batch_{BATCH_ITEMS}", "in-process batch track"),
    ("inprocess", "concurrent", "in-process track"),
    ("inprocess", "hot", "in-process track"),
    ("inprocess", GROUP, "in-process track"),
    ("inprocess", f"{GROUP}_hot", "in-process track"),
    ("http", "workers_1/track", "HTTP"),
    ("http", "workers_1/noop", "HTTP"),
    ("http", "workers_2/track", "HTTP"),
    ("http", "workers_2/noop", "HTTP"),
    ("http", f"workers_1/{TAIL}", "HTTP"),
    ("scale", "small", "scale"),
    ("scale", "large", "scale"),
)
_WIDTH = 62


def _cell(figures: Any) -> str:
    if not isinstance(figures, dict):
        return f"{'-':>9} {'-':>7} {'-':>7}"
    return (
        f"{figures['throughput_per_s']:>9,.0f} {figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f}"
    )


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _row(name: str, cells: list[str], width: int) -> str:
    return f"{name[:_WIDTH]:<{_WIDTH}}" + "".join(f" {c:>{width}}" for c in cells)


def render_text(report: dict[str, Any]) -> str:
    """The report as a table: figures per database side by side, then ratios, targets."""
    machine = report["machine"]
    databases = report["databases"]
    kinds = list(databases)
    lines = [
        f"revenipe bench, {report['plan']} plan, started {report['started_at']}, "
        f"took {report['elapsed_s']:.0f} s",
        f"machine: {machine['cpu_count']} CPUs ({machine.get('cpu_model') or 'unknown'}), "
        f"{machine.get('memory_gib')} GiB; Python {machine['python']}, "
        f"SQLite {machine['sqlite']}, PostgreSQL {machine.get('postgresql') or '-'}",
    ]
    generator = report.get("http_generator")
    if generator:
        ceilings = generator.get("ceilings") or {}
        at = ", ".join(
            f"{figures.get('throughput_per_s', 0):,.0f} requests/s at {connections} "
            f"connections ({figures.get('generator_cpu_pct')}% of a core)"
            for connections, figures in ceilings.items()
        )
        lines.append(
            f"HTTP load generator: {generator['description']}; its ceiling (against a "
            f"trivial responder): {at or '-'}"
        )
    lines += [
        "",
        _row("calls per second, p50 and p99 latency in ms", [NAMES[k] for k in kinds], 25),
    ]
    for part, path, title in _ROWS:
        found = [_get(databases[kind], part, *path.split("/")) for kind in kinds]
        label = next((f["label"] for f in found if isinstance(f, dict)), None)
        if label is not None:
            lines.append(_row(f"{title}: {label}", [_cell(f) for f in found], 25))
    if any("http" in databases[kind] for kind in kinds):
        lines += [
            "",
            _row(
                "HTTP runs: CPU % of one core, server / generator / machine",
                [NAMES[k] for k in kinds],
                14,
            ),
        ]
        for path in (
            "workers_1/track",
            "workers_1/noop",
            "workers_2/track",
            "workers_2/noop",
            f"workers_1/{TAIL}",
        ):
            found = [_get(databases[kind], "http", *path.split("/")) for kind in kinds]
            label = next((f["label"] for f in found if isinstance(f, dict)), None)
            cells = [
                f"{f['server_cpu_pct']} / {f['generator_cpu_pct']} / {f.get('machine_cpu_pct')}"
                if isinstance(f, dict)
                else "-"
                for f in found
            ]
            if label is not None:
                lines.append(_row(f"  {label}", cells, 14))
    lines += ["", _row("ratios, within this run", [NAMES[k] for k in kinds], 14)]
    for name in report["ratios"][kinds[0]] if kinds else ():
        lines.append(_row(f"  {name}", [_format(report["ratios"][k].get(name)) for k in kinds], 14))
    lines += ["", _row("targets of issue 14", [NAMES[k] for k in kinds], 22)]
    for name in TARGETS:
        cells = []
        for kind in kinds:
            entry = report["targets"][kind][name]
            verdict = {True: "met", False: "MISSED", None: "n/a"}[entry["met"]]
            cells.append(f"{_format(entry['value'])} ({entry['target']}) {verdict}")
        lines.append(_row(f"  {name}", cells, 22))
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)
