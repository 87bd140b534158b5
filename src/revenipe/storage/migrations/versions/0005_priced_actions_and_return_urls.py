"""priced actions on usage events (the action id and its price per action, catalog
`costs`) and the purchase return URLs an app accepts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("action", sa.String(64), nullable=True))
        batch.add_column(sa.Column("unit_price", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("return_urls", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("return_urls")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("unit_price")
        batch.drop_column("action")
