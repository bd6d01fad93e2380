"""Scoring's outbox: its erasures wait there until the relay publishes them after the commit, as
lifecycle's do
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "scoring_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False, server_default="privacy.erasures.v1"),
        sa.Column("claimed_until", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_outbox")),
    )


def downgrade() -> None:
    op.drop_table("scoring_outbox")
