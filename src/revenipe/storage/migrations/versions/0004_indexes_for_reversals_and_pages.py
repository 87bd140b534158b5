"""indexes so that no request reads a growing table from end to end: a reversal's
earlier refunds by reversal id (the 30-minute soak found every reversal reading the
whole ledger), and pages of customers and of usage history in id order per app and per
customer

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REVERSAL_ENTRIES = sa.text("reversal_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_customers_app", "customers", ["app_id", "id"])
    op.create_index("ix_usage_events_app", "usage_events", ["app_id", "id"])
    op.create_index("ix_usage_events_customer", "usage_events", ["customer_id", "id"])
    op.drop_index("ix_usage_events_customer_created", table_name="usage_events")
    op.create_index(
        "ix_ledger_entries_reversal",
        "ledger_entries",
        ["reversal_id"],
        sqlite_where=_REVERSAL_ENTRIES,
        postgresql_where=_REVERSAL_ENTRIES,
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_reversal", table_name="ledger_entries")
    op.create_index(
        "ix_usage_events_customer_created", "usage_events", ["customer_id", "created_at"]
    )
    op.drop_index("ix_usage_events_customer", table_name="usage_events")
    op.drop_index("ix_usage_events_app", table_name="usage_events")
    op.drop_index("ix_customers_app", table_name="customers")
