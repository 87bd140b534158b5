"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 03:34:04.424277
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_policy", sa.String(length=16), nullable=False),
        sa.Column("token_signing_secret", sa.String(length=128), nullable=False),
        sa.Column("catalog_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
    )
    op.create_table(
        "catalog_versions",
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_catalog_versions_app_id_apps")
        ),
        sa.PrimaryKeyConstraint("app_id", "version", name=op.f("pk_catalog_versions")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("anonymous", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_customers_app_id_apps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("app_id", "external_id", name=op.f("uq_customers_app_id")),
    )
    op.create_table(
        "secret_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_secret_keys_app_id_apps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_secret_keys_key_hash")),
    )
    with op.batch_alter_table("secret_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_secret_keys_app_id"), ["app_id"], unique=False)

    op.create_table(
        "access_sources",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_access_sources_app_id_apps")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_access_sources_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_sources")),
    )
    with op.batch_alter_table("access_sources", schema=None) as batch_op:
        batch_op.create_index("ix_access_sources_customer", ["customer_id"], unique=False)

    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("tracked_id", sa.String(length=64), nullable=False),
        sa.Column("access_source_id", sa.String(length=64), nullable=True),
        sa.Column("requested", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), nullable=False),
        sa.Column("reversed", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(length=32), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_usage_events_app_id_apps")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_usage_events_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("customer_id", "idempotency_key", name="uq_usage_events_idempotency"),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_customer_created", ["customer_id", "created_at"], unique=False
        )

    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("source_id", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.String(length=64), nullable=False),
        sa.Column("entitlement_type", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reset_interval", sa.String(length=8), nullable=True),
        sa.Column("reset_anchor", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollover_min", sa.BigInteger(), nullable=False),
        sa.Column("rollover_max", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_grants_balance_not_negative"),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_grants_app_id_apps")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_grants_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["access_sources.id"], name=op.f("fk_grants_source_id_access_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_grants_customer_entitlement",
            ["customer_id", "entitlement_id", "status"],
            unique=False,
        )

    op.create_table(
        "reversals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("usage_event_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_reversals_app_id_apps")),
        sa.ForeignKeyConstraint(
            ["usage_event_id"],
            ["usage_events.id"],
            name=op.f("fk_reversals_usage_event_id_usage_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reversals")),
        sa.UniqueConstraint("usage_event_id", "idempotency_key", name="uq_reversals_idempotency"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("usage_event_id", sa.String(length=40), nullable=True),
        sa.Column("reversal_id", sa.String(length=40), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_ledger_entries_app_id_apps")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_ledger_entries_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["grants.id"], name=op.f("fk_ledger_entries_grant_id_grants")
        ),
        sa.ForeignKeyConstraint(
            ["reversal_id"], ["reversals.id"], name=op.f("fk_ledger_entries_reversal_id_reversals")
        ),
        sa.ForeignKeyConstraint(
            ["usage_event_id"],
            ["usage_events.id"],
            name=op.f("fk_ledger_entries_usage_event_id_usage_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_entries_customer", ["customer_id", "id"], unique=False)
        batch_op.create_index("ix_ledger_entries_grant", ["grant_id"], unique=False)
        batch_op.create_index("ix_ledger_entries_usage_event", ["usage_event_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_usage_event")
        batch_op.drop_index("ix_ledger_entries_grant")
        batch_op.drop_index("ix_ledger_entries_customer")

    op.drop_table("ledger_entries")
    op.drop_table("reversals")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_customer_entitlement")

    op.drop_table("grants")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_customer_created")

    op.drop_table("usage_events")
    with op.batch_alter_table("access_sources", schema=None) as batch_op:
        batch_op.drop_index("ix_access_sources_customer")

    op.drop_table("access_sources")
    with op.batch_alter_table("secret_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_secret_keys_app_id"))

    op.drop_table("secret_keys")
    op.drop_table("customers")
    op.drop_table("catalog_versions")
    op.drop_table("apps")
