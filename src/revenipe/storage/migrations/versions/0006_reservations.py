"""reservations: holds of usage with a TTL, settled, released or expired; their
`held` and `released` ledger entries name them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_RESERVATION_ENTRIES = sa.text("reservation_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("app_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("tracked_id", sa.String(length=64), nullable=False),
        sa.Column("access_source_id", sa.String(length=64), nullable=True),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("hold_remaining", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("consumed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("released", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("shortfall", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("close_remaining", sa.BigInteger(), nullable=True),
        sa.Column("usage_event_id", sa.String(length=40), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_reservations_app_id_apps")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_reservations_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["usage_event_id"],
            ["usage_events.id"],
            name=op.f("fk_reservations_usage_event_id_usage_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
        sa.UniqueConstraint("customer_id", "idempotency_key", name="uq_reservations_idempotency"),
    )
    op.create_index(
        "ix_reservations_customer_state",
        "reservations",
        ["customer_id", "state", "expires_at"],
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reservation_id", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_ledger_entries_reservation_id_reservations"),
            "reservations",
            ["reservation_id"],
            ["id"],
        )
    op.create_index(
        "ix_ledger_entries_reservation",
        "ledger_entries",
        ["reservation_id"],
        sqlite_where=_RESERVATION_ENTRIES,
        postgresql_where=_RESERVATION_ENTRIES,
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_reservation", table_name="ledger_entries")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_ledger_entries_reservation_id_reservations"), type_="foreignkey"
        )
        batch_op.drop_column("reservation_id")
    op.drop_index("ix_reservations_customer_state", table_name="reservations")
    op.drop_table("reservations")
