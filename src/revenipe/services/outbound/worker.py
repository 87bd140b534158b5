"""The delivery worker: every server process runs one (docs/adr/0019).

A loop on a thread: claim due deliveries (a short write transaction that moves each
one's next attempt past a lease: servers sharing a PostgreSQL database skip each
other's claims, and a worker that dies mid-send leaves its claims to be retried when
the lease ends), send them in parallel without any transaction open, then record every
attempt and its outcome in one more write transaction. At least once: the receiver
drops a repeated `webhook-id`.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from revenipe.engine.errors import RevenipeError
from revenipe.engine.webhook_signing import signature_header
from revenipe.services.context import ServiceContext
from revenipe.services.outbound.targets import TargetPolicy, resolve
from revenipe.storage import outbound_events as outbox
from revenipe.storage import webhook_endpoints as endpoint_store

log = logging.getLogger("revenipe.webhooks_out")

DEFAULT_RETRY_SCHEDULE = (
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    36000.0,
    86400.0,
    86400.0,
    86400.0,
)
"""Seconds from each failed attempt to the next: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h, then a day three times (about 4 days 4 hours in all, 11 attempts); then the
delivery has failed."""

EXCERPT_BYTES = 512


@dataclass(frozen=True)
class DeliverySettings:
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    jitter: float = 0.1
    """Each wait is stretched by up to this fraction, at random (no thundering herds)."""
    poll_seconds: float = 0.25
    idle_poll_seconds: float = 2.0
    """How often a process whose database has no endpoint at all looks again."""
    timeout_seconds: float = 10.0
    lease_seconds: float = 60.0
    batch: int = 32
    senders: int = 8
    disable_after: timedelta = timedelta(days=5)
    policy: TargetPolicy = field(default_factory=TargetPolicy)


@dataclass(frozen=True, slots=True)
class _Job:
    delivery: outbox.DeliveryRow
    event: outbox.OutboundEventRow | None
    endpoint: endpoint_store.WebhookEndpointRow | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    job: _Job
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    excerpt: str | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _database_error(exc: BaseException) -> bool:
    # psycopg's classes by module name: a SQLite process never imports psycopg.
    return isinstance(exc, RevenipeError | DBAPIError | sqlite3.Error) or type(
        exc
    ).__module__.startswith("psycopg")


class DeliveryWorker:
    def __init__(self, ctx: ServiceContext, settings: DeliverySettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http_client: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.senders, thread_name_prefix="whsend")

    @property
    def _http(self) -> httpx.Client:
        # Made on first send: its TLS context costs tens of milliseconds, which a server
        # whose apps have no endpoint never needs to pay.
        with self._http_lock:
            if self._http_client is None:
                self._http_client = httpx.Client(
                    follow_redirects=False,
                    timeout=self.settings.timeout_seconds,
                    trust_env=False,
                    headers={"user-agent": "revenipe-webhooks/1"},
                )
            return self._http_client

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="webhook-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_seconds + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._http_client is not None:
            self._http_client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception as exc:
                if not _database_error(exc):
                    log.exception("webhook delivery round failed; trying again")
                else:
                    # The database is down, restarting or busy: expected, said in one
                    # line (requests meanwhile answer 503); the next round tries again.
                    log.warning(
                        "webhook delivery paused: the database is unavailable (%s); retrying",
                        type(exc).__name__,
                    )
                wait = 2.0
            self._stop.wait(wait)

    # -- one round -----------------------------------------------------------------------

    def run_once(self) -> float:
        """Claim, send and record one batch; how long to wait before the next round."""
        db = self.ctx.db
        now = self.ctx.now()
        with db.read() as conn:
            if not endpoint_store.has_any_endpoint(conn):
                return self.settings.idle_poll_seconds
            if not outbox.has_due_delivery(conn, now):
                return self.settings.poll_seconds
        jobs = self._claim(now)
        if not jobs:
            return self.settings.poll_seconds
        outcomes = list(self._pool.map(self._send, jobs))
        self._record(outcomes)
        return 0.0 if len(jobs) == self.settings.batch else self.settings.poll_seconds

    def _claim(self, now: datetime) -> list[_Job]:
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        with self.ctx.db.write() as conn:
            claimed = outbox.claim_due_deliveries(conn, now, lease, self.settings.batch)
            jobs = []
            for d in claimed:
                event = outbox.get_event_by_seq(conn, d.event_seq)
                endpoint = endpoint_store.get_endpoint(conn, d.app_id, d.endpoint_id)
                jobs.append(_Job(d, event, endpoint))
            return jobs

    def _send(self, job: _Job) -> _Outcome:
        started = time.monotonic()
        now = self.ctx.now()

        def outcome(status: int | None, excerpt: str | None, error: str | None) -> _Outcome:
            latency = int((time.monotonic() - started) * 1000)
            return _Outcome(job, now, status, latency, excerpt, error)

        endpoint, event = job.endpoint, job.event
        if endpoint is None or event is None:
            return outcome(None, None, "the endpoint or the event no longer exists")
        if not endpoint.enabled:
            return outcome(None, None, "the endpoint is disabled")
        try:
            target = resolve(endpoint.url, self.settings.policy)
        except RevenipeError as exc:
            return outcome(None, None, str(exc))
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                endpoint.signing_secrets(now), event.id, timestamp, event.body
            ),
        }
        url = httpx.URL(endpoint.url)
        host = f"[{target.address}]" if ":" in target.address else target.address
        pinned = url.copy_with(host=host.strip("[]"))
        headers["host"] = url.netloc.decode("ascii", "replace")
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            response = self._http.post(
                pinned, content=event.body.encode(), headers=headers, extensions=extensions
            )
        except httpx.TimeoutException:
            return outcome(None, None, "timed out")
        except httpx.HTTPError as exc:
            return outcome(None, None, f"{type(exc).__name__}: {str(exc)[:200]}")
        excerpt = response.content[:EXCERPT_BYTES].decode("utf-8", "replace")
        return outcome(response.status_code, excerpt, None)

    def _next_attempt(self, attempts: int, now: datetime) -> datetime | None:
        schedule = self.settings.retry_schedule
        if attempts > len(schedule):
            return None
        wait = schedule[attempts - 1] * (1 + random.uniform(0, self.settings.jitter))
        return now + timedelta(seconds=wait)

    def _record(self, outcomes: list[_Outcome]) -> None:
        with self.ctx.db.write() as conn:
            for o in outcomes:
                d = o.job.delivery
                if not outbox.lock_delivery(conn, d.id):
                    continue  # its endpoint was deleted meanwhile
                outbox.insert_attempt(
                    conn,
                    d.id,
                    attempted_at=o.attempted_at,
                    status_code=o.status_code,
                    latency_ms=o.latency_ms,
                    response_excerpt=o.excerpt,
                    error=o.error,
                )
                gone = o.job.endpoint is None or o.job.event is None
                disabled = o.job.endpoint is not None and not o.job.endpoint.enabled
                next_at = (
                    None
                    if (o.delivered or gone or disabled)
                    else self._next_attempt(d.attempts + 1, o.attempted_at)
                )
                status = (
                    outbox.DELIVERED
                    if o.delivered
                    else (outbox.PENDING if next_at is not None else outbox.FAILED)
                )
                outbox.update_delivery_outcome(
                    conn,
                    d.id,
                    status=status,
                    next_attempt_at=next_at,
                    last_status_code=o.status_code,
                    last_error=o.error,
                    delivered_at=o.attempted_at if o.delivered else None,
                )
                if o.job.endpoint is not None and not gone and not disabled:
                    self._track_health(conn, o)

    def _track_health(self, conn: Connection, o: _Outcome) -> None:
        """An endpoint failing every attempt for `disable_after` is disabled, saying why."""
        if o.job.endpoint is None:
            return
        last = o.status_code if o.status_code is not None else o.error
        endpoint_store.update_endpoint_health(
            conn,
            o.job.endpoint.id,
            delivered=o.delivered,
            now=o.attempted_at,
            cutoff=o.attempted_at - self.settings.disable_after,
            reason=f"every delivery failed for {self.settings.disable_after} (last: {last})"[:500],
        )
