"""acquisition channels: scoring keeps each customer's first-touch channel (value by channel);
lifecycle indexes first touches (acquisition cohorts)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scoring_customers") as batch:
        # Existing rows: their last channel is the best estimate there is (replay to correct).
        batch.add_column(
            sa.Column("first_channel", sa.String(16), nullable=False, server_default="other")
        )
    op.execute("UPDATE scoring_customers SET first_channel = last_channel")
    op.create_index(
        "ix_lifecycle_customers_first_touch_at", "lifecycle_customers", ["first_touch_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_lifecycle_customers_first_touch_at", "lifecycle_customers")
    with op.batch_alter_table("scoring_customers") as batch:
        batch.drop_column("first_channel")
