"""purchases and subscriptions: provider state on access sources, sandbox apps and
their test clocks, purchase attempts, provider settings and customers, webhook events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:23:52.264800
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_settings",
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_provider_settings_app_id_apps")
        ),
        sa.PrimaryKeyConstraint("app_id", "provider", name=op.f("pk_provider_settings")),
    )
    op.create_table(
        "webhook_events",
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_webhook_events_app_id_apps")
        ),
        sa.PrimaryKeyConstraint("app_id", "provider", "event_id", name=op.f("pk_webhook_events")),
    )
    op.create_table(
        "provider_customers",
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("provider_customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_provider_customers_app_id_apps")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_provider_customers_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "provider", "customer_id", name=op.f("pk_provider_customers")
        ),
        sa.UniqueConstraint(
            "app_id", "provider", "provider_customer_id", name="uq_provider_customers_ref"
        ),
    )
    op.create_table(
        "purchase_attempts",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("client_secret_hash", sa.String(length=64), nullable=True),
        sa.Column("source_id", sa.String(length=40), nullable=True),
        sa.Column("success_url", sa.Text(), nullable=True),
        sa.Column("cancel_url", sa.Text(), nullable=True),
        sa.Column("trial", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_purchase_attempts_app_id_apps")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_purchase_attempts_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_attempts")),
    )
    with op.batch_alter_table("purchase_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_purchase_attempts_customer", ["customer_id"], unique=False)

    with op.batch_alter_table("access_sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_ref", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("trial_end", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("billing_anchor", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("billing_interval", sa.String(length=8), nullable=True))
        batch_op.add_column(
            sa.Column(
                "payment_method_attached", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(sa.Column("pending_change", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("provider_state_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(
            "uq_access_sources_provider_ref", ["app_id", "provider", "provider_ref"]
        )

    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sandbox", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("clock_offset_seconds", sa.BigInteger(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("term_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("follows_period", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    # Until now a grant's expiry was its own term: keep it as such.
    op.execute("UPDATE grants SET term_expires_at = expires_at")


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("follows_period")
        batch_op.drop_column("term_expires_at")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("due_at")

    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("clock_offset_seconds")
        batch_op.drop_column("sandbox")

    with op.batch_alter_table("access_sources", schema=None) as batch_op:
        batch_op.drop_constraint("uq_access_sources_provider_ref", type_="unique")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("provider_state_at")
        batch_op.drop_column("due_at")
        batch_op.drop_column("pending_change")
        batch_op.drop_column("payment_method_attached")
        batch_op.drop_column("billing_interval")
        batch_op.drop_column("billing_anchor")
        batch_op.drop_column("ended_at")
        batch_op.drop_column("trial_end")
        batch_op.drop_column("provider_ref")

    with op.batch_alter_table("purchase_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_purchase_attempts_customer")

    op.drop_table("purchase_attempts")
    op.drop_table("provider_customers")
    op.drop_table("webhook_events")
    op.drop_table("provider_settings")
