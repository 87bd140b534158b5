"""dashboard aggregates: usage folded per hour and per customer and day, active
customers per day, the fold's watermark, access sources counted by status
(docs/adr/0021)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_rollup_hours",
        sa.Column("app_id", sa.String(40), sa.ForeignKey("apps.id"), primary_key=True),
        sa.Column("tracked_id", sa.String(64), primary_key=True),
        sa.Column("hour", _time(), primary_key=True),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), nullable=False),
        sa.Column("refused_units", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_rollup_hours_app_hour", "usage_rollup_hours", ["app_id", "hour"])
    op.create_table(
        "usage_rollup_customer_days",
        sa.Column("app_id", sa.String(40), sa.ForeignKey("apps.id"), primary_key=True),
        sa.Column("tracked_id", sa.String(64), primary_key=True),
        sa.Column("day", _time(), primary_key=True),
        sa.Column("customer_id", sa.String(40), primary_key=True),
        sa.Column("tracks", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_usage_rollup_customer_days_top",
        "usage_rollup_customer_days",
        ["app_id", "tracked_id", "day", "consumed"],
    )
    op.create_table(
        "usage_rollup_active",
        sa.Column("app_id", sa.String(40), sa.ForeignKey("apps.id"), primary_key=True),
        sa.Column("day", _time(), primary_key=True),
        sa.Column("customer_id", sa.String(40), primary_key=True),
    )
    op.create_table(
        "usage_rollup_days",
        sa.Column("app_id", sa.String(40), sa.ForeignKey("apps.id"), primary_key=True),
        sa.Column("day", _time(), primary_key=True),
        sa.Column("active_customers", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "rollup_watermarks",
        sa.Column("stream", sa.String(32), primary_key=True),
        sa.Column("position", sa.String(64), nullable=False),
        sa.Column("folded_to", _time()),
        sa.Column("updated_at", _time()),
    )
    op.create_table(
        "source_status_counts",
        sa.Column("app_id", sa.String(40), sa.ForeignKey("apps.id"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("status", sa.String(24), primary_key=True),
        sa.Column("sources", sa.BigInteger(), nullable=False),
        sa.Column("counted_at", _time(), nullable=False),
    )
    op.create_index(
        "ix_access_sources_app_kind_status", "access_sources", ["app_id", "kind", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_access_sources_app_kind_status", table_name="access_sources")
    for table in (
        "source_status_counts",
        "rollup_watermarks",
        "usage_rollup_days",
        "usage_rollup_active",
        "usage_rollup_customer_days",
        "usage_rollup_hours",
    ):
        op.drop_table(table)
