"""customers.alerts_version: the catalog version with which the customer's usage-alert
memory (`customer_signals`) was last brought up to date for every alerted target; a
track whose customer is current skips the alerts' read when its change can cross no
threshold (docs/adr/0019)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 05:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("alerts_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("alerts_version")
