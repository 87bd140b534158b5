"""Tables. Amounts are BIGINT; times are timezone-aware UTC; ids are prefixed strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator

from revenipe.engine.errors import InvariantViolation


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on both dialects.

    SQLite has no time zone type: values are stored as UTC text and read back naive, so
    the UTC zone is put back on read. Naive datetimes are refused on write.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"naive or non-datetime value for a time column: {value!r}")
        utc: datetime = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise InvariantViolation(f"a time column read as {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        converted: datetime = value.astimezone(UTC)
        return converted


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = UtcDateTime()
Id = String(40)

apps = Table(
    "apps",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_policy", String(16), nullable=False),
    Column("token_signing_secret", String(128), nullable=False),
    Column("catalog_version", Integer, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("sandbox", Boolean, nullable=False, server_default=false()),
    Column("clock_offset_seconds", BigInteger, nullable=False, server_default="0"),
    # The purchase return URLs the app accepts (JSON list; null: none listed).
    Column("return_urls", Text),
)

secret_keys = Table(
    "secret_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False, index=True),
    Column("key_hash", String(128), nullable=False, unique=True),
    Column("created_at", Time, nullable=False),
    Column("revoked_at", Time),
)

catalog_versions = Table(
    "catalog_versions",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("document", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("applied_at", Time, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("external_id", String(256), nullable=False),
    Column("anonymous", Boolean, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("due_at", Time),
    # The catalog version with which the usage-alert memory (`customer_signals`) was
    # last brought up to date for every alerted target (docs/adr/0019); NULL: never.
    Column("alerts_version", Integer),
    UniqueConstraint("app_id", "external_id"),
    # Pages of an app's customers, in id order, read as far as the page goes.
    Index("ix_customers_app", "app_id", "id"),
)

access_sources = Table(
    "access_sources",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("product_id", String(64)),
    Column("kind", String(16), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("status", String(24), nullable=False),
    Column("started_at", Time, nullable=False),
    Column("current_period_start", Time),
    Column("current_period_end", Time),
    Column("expires_at", Time),
    Column("cancel_at_period_end", Boolean, nullable=False),
    Column("canceled_at", Time),
    Column("created_at", Time, nullable=False),
    Column("provider_ref", String(255)),
    Column("trial_end", Time),
    Column("ended_at", Time),
    Column("billing_anchor", Time),
    Column("billing_interval", String(8)),
    Column("payment_method_attached", Boolean, nullable=False, server_default=false()),
    Column("pending_change", Text),
    Column("due_at", Time),
    Column("provider_state_at", Time),
    Column("updated_at", Time),
    Index("ix_access_sources_customer", "customer_id"),
    UniqueConstraint("app_id", "provider", "provider_ref", name="uq_access_sources_provider_ref"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("source_id", Id, ForeignKey("access_sources.id"), nullable=False),
    Column("entitlement_id", String(64), nullable=False),
    Column("entitlement_type", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("period_start", Time, nullable=False),
    Column("expires_at", Time),
    Column("reset_interval", String(8)),
    Column("reset_anchor", Time),
    Column("rollover_min", BigInteger, nullable=False),
    Column("rollover_max", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("term_expires_at", Time),
    Column("follows_period", Boolean, nullable=False, server_default=false()),
    CheckConstraint("balance >= 0", name="ck_grants_balance_not_negative"),
    Index("ix_grants_customer_entitlement", "customer_id", "entitlement_id", "status"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("tracked_id", String(64), nullable=False),
    Column("access_source_id", String(64)),
    Column("requested", BigInteger, nullable=False),
    Column("consumed", BigInteger, nullable=False),
    Column("reversed", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error", String(32)),
    Column("idempotency_key", String(255)),
    Column("created_at", Time, nullable=False),
    # A priced action (catalog `costs`): its id and the price per action it was drawn at.
    Column("action", String(64)),
    Column("unit_price", BigInteger),
    UniqueConstraint("customer_id", "idempotency_key", name="uq_usage_events_idempotency"),
    # Usage history pages, newest first (ids sort by creation time): an app's, a customer's.
    Index("ix_usage_events_app", "app_id", "id"),
    Index("ix_usage_events_customer", "customer_id", "id"),
)

reversals = Table(
    "reversals",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("usage_event_id", Id, ForeignKey("usage_events.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("idempotency_key", String(255)),
    Column("created_at", Time, nullable=False),
    UniqueConstraint("usage_event_id", "idempotency_key", name="uq_reversals_idempotency"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("grant_id", Id, ForeignKey("grants.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("usage_event_id", Id, ForeignKey("usage_events.id")),
    Column("reversal_id", Id, ForeignKey("reversals.id")),
    Column("effective_at", Time, nullable=False),
    Column("recorded_at", Time, nullable=False),
    Index("ix_ledger_entries_grant", "grant_id"),
    Index("ix_ledger_entries_usage_event", "usage_event_id"),
    Index("ix_ledger_entries_customer", "customer_id", "id"),
    # What a reversal gave back, read by every later reversal of the same usage event;
    # only reversal entries carry one, so consumption entries cost this index nothing.
    Index(
        "ix_ledger_entries_reversal",
        "reversal_id",
        sqlite_where=text("reversal_id IS NOT NULL"),
        postgresql_where=text("reversal_id IS NOT NULL"),
    ),
    # A reservation's `held` and `released` entries (docs/concepts/reservations.md).
    Column("reservation_id", Id, ForeignKey("reservations.id")),
    Index(
        "ix_ledger_entries_reservation",
        "reservation_id",
        sqlite_where=text("reservation_id IS NOT NULL"),
        postgresql_where=text("reservation_id IS NOT NULL"),
    ),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("tracked_id", String(64), nullable=False),
    Column("access_source_id", String(64)),
    Column("held", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("hold_remaining", BigInteger, nullable=False),
    Column("idempotency_key", String(255)),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False),
    # How it closed: the answer every later settle or release of it replays.
    Column("requested", BigInteger, nullable=False, server_default="0"),
    Column("consumed", BigInteger, nullable=False, server_default="0"),
    Column("released", BigInteger, nullable=False, server_default="0"),
    Column("shortfall", BigInteger, nullable=False, server_default="0"),
    Column("close_remaining", BigInteger),
    Column("usage_event_id", Id, ForeignKey("usage_events.id")),
    Column("closed_at", Time),
    UniqueConstraint("customer_id", "idempotency_key", name="uq_reservations_idempotency"),
    # A customer's open holds, soonest expiry first: its `due_at`, and catching up.
    Index("ix_reservations_customer_state", "customer_id", "state", "expires_at"),
)

purchase_attempts = Table(
    "purchase_attempts",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("product_id", String(64)),
    Column("kind", String(16), nullable=False),
    Column("method", String(24), nullable=False),
    Column("status", String(16), nullable=False),
    Column("client_secret_hash", String(64)),
    Column("source_id", Id),
    Column("success_url", Text),
    Column("cancel_url", Text),
    Column("trial", Boolean, nullable=False, server_default=false()),
    Column("details", Text),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False),
    Column("completed_at", Time),
    Index("ix_purchase_attempts_customer", "customer_id"),
)

provider_settings = Table(
    "provider_settings",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("provider", String(16), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("updated_at", Time, nullable=False),
)

provider_customers = Table(
    "provider_customers",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("provider", String(16), primary_key=True),
    Column("customer_id", Id, ForeignKey("customers.id"), primary_key=True),
    Column("provider_customer_id", String(255), nullable=False),
    Column("created_at", Time, nullable=False),
    UniqueConstraint(
        "app_id", "provider", "provider_customer_id", name="uq_provider_customers_ref"
    ),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("provider", String(16), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
    Column("received_at", Time, nullable=False),
    # What the event is about (RevenueCat: a subscription or a purchase), and when it
    # happened by the provider's clock: a subject's events are read back in that order.
    Column("subject", String(255)),
    Column("occurred_at", Time),
    Index("ix_webhook_events_subject", "app_id", "provider", "subject"),
)

# -- outbound webhooks (docs/adr/0019): endpoints, the event outbox, deliveries --------

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(500)),
    # A JSON list of event types; NULL: every type.
    Column("event_types", Text),
    Column("secret", String(128), nullable=False),
    # The secret before the last rotation, still signing until it expires.
    Column("previous_secret", String(128)),
    Column("previous_secret_expires_at", Time),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text),
    Column("failing_since", Time),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Index("ix_webhook_endpoints_app", "app_id", "id"),
)

outbound_events = Table(
    "outbound_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", Id, nullable=False, unique=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id")),
    Column("customer_seq", BigInteger),
    Column("type", String(64), nullable=False),
    # The body exactly as delivered (and signed): `{"type", "timestamp", "data"}`.
    Column("body", Text, nullable=False),
    Column("created_at", Time, nullable=False),
    Index("ix_outbound_events_app", "app_id", "seq"),
    # Not unique on purpose: numbering runs under the customer's lock, and an event must
    # never fail the change it reports.
    Index("ix_outbound_events_customer_seq", "customer_id", "customer_seq"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("endpoint_id", Id, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("event_seq", BigInteger, ForeignKey("outbound_events.seq"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    # Pending: when the next attempt is due (or when a claimed attempt's lease ends).
    Column("next_attempt_at", Time),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", Time, nullable=False),
    Column("delivered_at", Time),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("delivery_id", Id, ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempted_at", Time, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("response_excerpt", Text),
    Column("error", Text),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)

customer_signals = Table(
    "customer_signals",
    metadata,
    # What an alert remembers per customer: a threshold crossed and not yet recovered
    # (signal "remaining:20", "remaining_percent:10"), the last `usage.refused` sent.
    Column("customer_id", Id, ForeignKey("customers.id"), primary_key=True),
    Column("target_id", String(64), primary_key=True),
    Column("signal", String(64), primary_key=True),
    Column("at", Time, nullable=False),
)

# -- operators of the dashboard (docs/adr/0020) ----------------------------------------

operators = Table(
    "operators",
    metadata,
    Column("id", Id, primary_key=True),
    # Stored lower-cased: one account per address, however it is typed.
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    # An IANA name: the dashboard shows times in it.
    Column("time_zone", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
)

operator_sessions = Table(
    "operator_sessions",
    metadata,
    # SHA-256 of the cookie's random token: a copy of the table signs nobody in.
    Column("token_hash", String(64), primary_key=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False),
    Index("ix_operator_sessions_operator", "operator_id"),
)

sign_in_links = Table(
    "sign_in_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    # NULL: a set-up link, which creates the first operator when used.
    Column("operator_id", Id, ForeignKey("operators.id")),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False),
    Column("used_at", Time),
)

sign_in_failures = Table(
    "sign_in_failures",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    # "email:<address>" or "address:<client address>"
    Column("subject", String(400), nullable=False),
    Column("at", Time, nullable=False),
    Index("ix_sign_in_failures_subject", "subject", "at"),
    # Failures older than the window are deleted at each new one, whatever their subject.
    Index("ix_sign_in_failures_at", "at"),
)

# -- dashboard aggregates (docs/adr/0021): usage rolled up by a worker, never on a track --

usage_rollup_hours = Table(
    "usage_rollup_hours",
    metadata,
    # Per app, tracked id (a usage key or an entitlement; every unknown id folded into
    # one row, "?") and UTC hour: the tracks that succeeded and were refused, the units
    # consumed, and the units refused tracks asked for.
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("tracked_id", String(64), primary_key=True),
    Column("hour", Time, primary_key=True),
    Column("succeeded", BigInteger, nullable=False),
    Column("refused", BigInteger, nullable=False),
    Column("consumed", BigInteger, nullable=False),
    Column("refused_units", BigInteger, nullable=False),
    # The overview reads every tracked id of an app over a range of hours.
    Index("ix_usage_rollup_hours_app_hour", "app_id", "hour"),
)

usage_rollup_customer_days = Table(
    "usage_rollup_customer_days",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("tracked_id", String(64), primary_key=True),
    Column("day", Time, primary_key=True),
    Column("customer_id", Id, primary_key=True),
    Column("tracks", BigInteger, nullable=False),
    Column("refused", BigInteger, nullable=False),
    Column("consumed", BigInteger, nullable=False),
    # A day's biggest consumers of one tracked id, read from the top.
    Index("ix_usage_rollup_customer_days_top", "app_id", "tracked_id", "day", "consumed"),
)

usage_rollup_active = Table(
    "usage_rollup_active",
    metadata,
    # Who tracked anything on a UTC day: only so that `usage_rollup_days` counts each
    # customer once a day.
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("day", Time, primary_key=True),
    Column("customer_id", Id, primary_key=True),
)

usage_rollup_days = Table(
    "usage_rollup_days",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("day", Time, primary_key=True),
    Column("active_customers", BigInteger, nullable=False),
)

rollup_watermarks = Table(
    "rollup_watermarks",
    metadata,
    # How far a stream is folded: every row with an id up to `position` is counted, and
    # every row of it created before `folded_to` has an id up to `position`.
    Column("stream", String(32), primary_key=True),
    Column("position", String(64), nullable=False),
    Column("folded_to", Time),
    Column("updated_at", Time),
)

source_status_counts = Table(
    "source_status_counts",
    metadata,
    # Access sources per app, kind and status, recounted by the rollup worker.
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("status", String(24), primary_key=True),
    Column("sources", BigInteger, nullable=False),
    Column("counted_at", Time, nullable=False),
)

# The rollup worker counts an app's access sources by kind and status from this index
# alone (added with the rollups, migration 0009).
Index(
    "ix_access_sources_app_kind_status",
    access_sources.c.app_id,
    access_sources.c.kind,
    access_sources.c.status,
)
