"""webhook events: what each event is about (its subject) and when it happened, so a
provider whose events carry one state each (RevenueCat) can read a subject's events
back in the order they happened

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_webhook_events_subject", ["app_id", "provider", "subject"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_subject")
        batch_op.drop_column("occurred_at")
        batch_op.drop_column("subject")
