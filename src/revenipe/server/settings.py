"""Server settings, read from the environment (the CLI sets them from its flags)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from revenipe.services.outbound.targets import TargetPolicy
from revenipe.services.outbound.worker import DEFAULT_RETRY_SCHEDULE, DeliverySettings
from revenipe.storage.database import DEFAULT_DATABASE_URL


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


def _bool_env(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SystemExit(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class ServerSettings:
    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 1024 * 1024
    """`POST /v1/track/batch`: 1,000 items with long ids and keys fit."""
    anonymous_logins_per_minute_per_address: int = 30
    anonymous_logins_per_minute_per_app: int = 1200
    app_cache_seconds: float = 2.0
    public_url: str | None = None
    """This server's address as customers' browsers reach it (sandbox checkout pages);
    default: the address each request came to."""
    max_json_depth: int = 32
    # Client-protocol requests (never the server API); 0 turns a limit off. A bucket
    # holds ten seconds' worth, so a burst is allowed and a flood is not.
    client_requests_per_minute_per_address: int = 6000
    client_requests_per_minute_per_app: int = 0
    client_requests_per_minute_per_customer: int = 1200
    opentelemetry: bool = False
    """FastAPI's native OpenTelemetry (traces, metrics, logs of every request, to the
    providers the process configured). Off unless asked for: on, it looks the global
    providers up on every request, some 8% of a track request's CPU."""
    allow_private_webhooks: bool = False
    """Outbound webhooks may target loopback and private addresses, over plain http
    (tests, local development: `--allow-private-webhooks`)."""
    webhook_delivery: DeliverySettings = field(default_factory=DeliverySettings)
    postgres_write_lanes: int | None = None
    """Group-commit transactions this process runs at once on PostgreSQL; None: the
    storage's default (2). `revenipe serve --workers N` (N > 1) sets 1: the lanes of all
    workers add up, and 4 lanes on this 2-core machine served 25-30 % fewer tracks than
    2 (docs/adr/0015)."""

    @property
    def webhook_policy(self) -> TargetPolicy:
        private = self.allow_private_webhooks
        return TargetPolicy(allow_private=private, require_https=not private)

    @classmethod
    def from_env(cls) -> ServerSettings:
        return cls(
            database_url=os.environ.get("REVENIPE_DATABASE_URL") or DEFAULT_DATABASE_URL,
            max_body_bytes=_int_env("REVENIPE_MAX_BODY_BYTES", 64 * 1024),
            max_batch_body_bytes=_int_env("REVENIPE_MAX_BATCH_BODY_BYTES", 1024 * 1024),
            anonymous_logins_per_minute_per_address=_int_env(
                "REVENIPE_ANON_LOGINS_PER_MINUTE_PER_ADDRESS", 30
            ),
            anonymous_logins_per_minute_per_app=_int_env(
                "REVENIPE_ANON_LOGINS_PER_MINUTE_PER_APP", 1200
            ),
            public_url=os.environ.get("REVENIPE_PUBLIC_URL") or None,
            max_json_depth=_int_env("REVENIPE_MAX_JSON_DEPTH", 32),
            client_requests_per_minute_per_address=_int_env(
                "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_ADDRESS", 6000
            ),
            client_requests_per_minute_per_app=_int_env(
                "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_APP", 0
            ),
            client_requests_per_minute_per_customer=_int_env(
                "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_CUSTOMER", 1200
            ),
            opentelemetry=_bool_env("REVENIPE_OPENTELEMETRY"),
            allow_private_webhooks=os.environ.get("REVENIPE_ALLOW_PRIVATE_WEBHOOKS") == "1",
            webhook_delivery=_delivery_from_env(),
            postgres_write_lanes=_lanes_from_env(),
        )


def _lanes_from_env() -> int | None:
    if not os.environ.get("REVENIPE_POSTGRES_WRITE_LANES"):
        return None
    lanes = _int_env("REVENIPE_POSTGRES_WRITE_LANES", 0)
    if not 1 <= lanes <= 16:
        raise SystemExit(f"REVENIPE_POSTGRES_WRITE_LANES must be from 1 to 16, got {lanes}")
    return lanes


def _delivery_from_env() -> DeliverySettings:
    """`REVENIPE_WEBHOOK_RETRY_SCHEDULE` (seconds, comma-separated),
    `REVENIPE_WEBHOOK_POLL_SECONDS` and `REVENIPE_WEBHOOK_LEASE_SECONDS`: shorter in tests."""
    schedule = os.environ.get("REVENIPE_WEBHOOK_RETRY_SCHEDULE")
    poll = os.environ.get("REVENIPE_WEBHOOK_POLL_SECONDS")
    lease = os.environ.get("REVENIPE_WEBHOOK_LEASE_SECONDS")
    try:
        retries = tuple(float(s) for s in schedule.split(",")) if schedule else None
        poll_seconds = float(poll) if poll else None
        lease_seconds = float(lease) if lease else 60.0
    except ValueError:
        raise SystemExit("REVENIPE_WEBHOOK_* must be numbers (seconds)") from None
    private = os.environ.get("REVENIPE_ALLOW_PRIVATE_WEBHOOKS") == "1"
    return DeliverySettings(
        retry_schedule=retries or DEFAULT_RETRY_SCHEDULE,
        poll_seconds=poll_seconds or 0.25,
        idle_poll_seconds=poll_seconds or 2.0,
        lease_seconds=lease_seconds,
        policy=TargetPolicy(allow_private=private, require_https=not private),
    )
