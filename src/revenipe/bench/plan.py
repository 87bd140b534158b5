"""How much the bench measures: the quick and the full plan."""

from __future__ import annotations

from dataclasses import dataclass

PARTS = ("sql_limit", "inprocess", "http", "scale")
DATABASES = ("sqlite", "postgresql")
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
GROUP_THREADS = 16
BATCH_ITEMS = 100
"""Tracks per batch in the batch track scenario (`ratios.<db>.batch_vs_single`)."""
"""Threads of one caller process sharing one Backend, as a web server's threads do
(`inprocess.group_16_threads`, `inprocess.group_16_threads_hot`)."""
GROUPED_STATEMENTS = f"track_statements_{GROUP_THREADS}_a_commit"
"""A track's own statements, as many tracks a transaction as the thread group has
threads (`sql_limit.track_statements_16_a_commit`): the database's part of group commit."""
PARALLEL_STATEMENTS = f"track_statements_{GROUP_THREADS}_a_commit_in_parallel"
"""The same from several callers at once, as many as the bench's concurrency and at
most group commit's write lanes (`sql_limit.track_statements_16_a_commit_in_parallel`;
PostgreSQL only, SQLite has one writer): the database's ceiling for group commit."""
DECIDED_STATEMENTS = "track_statements_decided"
"""A track's own statements, decided by the engine (`sql_limit.track_statements_decided`,
bench/track_sql.py): the ceiling of a track that keeps its rules in the engine."""
GROUPED_DECIDED_STATEMENTS = f"{DECIDED_STATEMENTS}_{GROUP_THREADS}_a_commit"
"""The same, as many tracks a transaction as the thread group has threads."""
KEPT_GRANTS_STATEMENTS = f"{DECIDED_STATEMENTS}_kept_grants"
"""SQLite only: decided on each customer's grants kept in memory after its first call:
the ceiling of a design that caches grants in the process."""
HTTP_TAIL_CONNECTIONS = 64
"""Connections of the HTTP run that measures the tail (`http.workers_1.track_64`)."""


@dataclass(frozen=True)
class Plan:
    name: str
    duration_s: float
    """Length of each in-process and raw-SQL scenario (all its rounds)."""
    rounds: int
    """Rounds in which compared scenarios alternate (raw SQL and in-process; the scale's
    small and large database; HTTP track and no-op)."""
    warmup_calls: int
    """Calls each caller makes before a scenario is measured."""
    customers: int
    """Customers (and raw-SQL balance rows) in each many-customers scenario."""
    concurrency: int
    """Callers in the concurrent scenarios (processes), and 'moderate load' for p99."""
    http_customers: int
    """Customers the HTTP tracks go round over: more than the tail run's connections,
    so that concurrent requests seldom meet on one customer."""
    http_duration_s: int
    """Seconds of each HTTP load run, per round (the load generator counts whole seconds)."""
    http_rounds: int
    http_connections: int
    scale_sizes: tuple[int, int]
    """Customers (and about twice as many ledger entries) at the small and large scale."""
    scale_customers: int
    """Customers created through the API and tracked at each scale."""
    scale_calls: int
    """Tracks timed at each scale (one caller)."""


QUICK = Plan(
    name="quick",
    duration_s=0.4,
    rounds=2,
    warmup_calls=10,
    customers=30,
    concurrency=2,
    http_customers=2 * HTTP_TAIL_CONNECTIONS,
    http_duration_s=1,
    http_rounds=1,
    http_connections=16,
    scale_sizes=(1_000, 100_000),
    scale_customers=6,
    scale_calls=200,
)

FULL = Plan(
    name="full",
    # 5 s, not 6: the thread groups added two scenarios per database, and the full run
    # stays under 6 minutes.
    duration_s=5.0,
    rounds=6,
    warmup_calls=100,
    customers=300,
    concurrency=2,
    http_customers=200,
    http_duration_s=2,
    http_rounds=3,
    http_connections=16,
    scale_sizes=(1_000, 1_000_000),
    scale_customers=20,
    scale_calls=3000,
)
