"""conversion and acquisition: lifecycle's funnel of live stage entries with their credit per
channel and model (filled from the stored journeys), an index on first touches (cohorts);
scoring keeps each customer's first-touch channel (value by acquisition channel)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.lifecycle.attribution import MODELS, credits
from services.lifecycle.journey import decode_path
from services.lifecycle.repository import FunnelEntry, funnel_row
from services.lifecycle.tables import CHANNELS, credit_column
from shared.db import UTCDateTime

ID = 255

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
    funnel = op.create_table(
        "lifecycle_funnel",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        *(
            sa.Column(credit_column(model, channel), sa.Float(), nullable=False)
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
    _fill_funnel(funnel)


def _fill_funnel(funnel: sa.Table) -> None:
    """Live stage entries (after a customer's latest reset) of the stored journeys."""
    bind = op.get_bind()
    names = ("customer_id", "kind", "to_stage", "message_id", "channel", "touch_path")
    t = sa.table("lifecycle_transitions", *map(sa.column, names), sa.column("at", UTCDateTime()))
    c = sa.table(
        "lifecycle_customers", sa.column("customer_id"), sa.column("reset_at", UTCDateTime())
    )
    o = sa.table(
        "lifecycle_orders", sa.column("customer_id"), sa.column("message_id"), sa.column("amount")
    )
    rows = bind.execute(
        sa.select(t.c.customer_id, t.c.to_stage, t.c.at, t.c.channel, t.c.touch_path, o.c.amount)
        .join(c, c.c.customer_id == t.c.customer_id)
        .outerjoin(o, (o.c.customer_id == t.c.customer_id) & (o.c.message_id == t.c.message_id))
        .where(t.c.kind == "stage", (c.c.reset_at.is_(None)) | (t.c.at > c.c.reset_at))
    )
    entries = []
    for row in rows:
        entry = FunnelEntry(
            customer_id=row.customer_id,
            stage=row.to_stage,
            at=row.at,
            channel=row.channel or "other",
            value=row.amount or 0.0,
            credits=credits(decode_path(row.touch_path), row.at),
        )
        entries.append(funnel_row(entry))
        if len(entries) >= 10_000:
            bind.execute(funnel.insert(), entries)
            entries.clear()
    if entries:
        bind.execute(funnel.insert(), entries)


def downgrade() -> None:
    op.drop_table("lifecycle_funnel")
    op.drop_index("ix_lifecycle_customers_first_touch_at", "lifecycle_customers")
    with op.batch_alter_table("scoring_customers") as batch:
        batch.drop_column("first_channel")
