"""conversion and acquisition: lifecycle's funnel of live stage entries with their credit per
channel and model, an index on first touches (cohorts); scoring keeps each customer's
first-touch channel (value by acquisition channel)

The funnel starts empty: the engine writes an entry with each stage it records. This revision
once filled it from journeys already stored, through the live attribution code, which a
migration must not import (it would change with the code). It came hours after 0003, before any
release; a database with journeys from those hours gets its funnel by replaying its events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

ID = 255
# Frozen as they were when this revision was written: a migration never follows the live code.
MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
CHANNELS = ("web", "email", "mobile", "social", "other")

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
    op.create_table(
        "lifecycle_funnel",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        *(
            sa.Column(f"credit_{model}_{channel}", sa.Float(), nullable=False)
            for model in MODELS
            for channel in CHANNELS
        ),
        sa.PrimaryKeyConstraint("customer_id", "stage", name=op.f("pk_lifecycle_funnel")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_lifecycle_funnel_stage",
        "lifecycle_funnel",
        ["stage", "entered_at", "channel", "customer_id"],
    )


def downgrade() -> None:
    op.drop_table("lifecycle_funnel")
    op.drop_index("ix_lifecycle_customers_first_touch_at", "lifecycle_customers")
    with op.batch_alter_table("scoring_customers") as batch:
        batch.drop_column("first_channel")
