"""initial: processed messages, minimal lifecycle and scoring customers"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "0001"
down_revision = None


def _customer_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("last_channel", sa.String(16), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "processed_messages",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_processed_messages")),
    )
    op.create_table(
        "lifecycle_customers",
        *_customer_columns(),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_lifecycle_customers")),
    )
    op.create_table(
        "scoring_customers",
        *_customer_columns(),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_scoring_customers")),
    )


def downgrade() -> None:
    op.drop_table("scoring_customers")
    op.drop_table("lifecycle_customers")
    op.drop_table("processed_messages")
