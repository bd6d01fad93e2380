"""GDPR erasure: per-service suppression lists (hashed ids), processed-message records carry the
hash of their customer (what an erasure deletes by), the lifecycle outbox names its topic (it also
relays erasures)
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("id_hash", sa.String(32), nullable=False),
        sa.Column("suppressed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "id_hash", name=op.f("pk_suppressions")),
    )
    with op.batch_alter_table("processed_messages") as batch:
        batch.add_column(sa.Column("customer_hash", sa.String(32)))
    with op.batch_alter_table("lifecycle_outbox") as batch:
        batch.add_column(
            sa.Column(
                "topic", sa.String(64), nullable=False, server_default="lifecycle.stage-changes.v1"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_outbox") as batch:
        batch.drop_column("topic")
    with op.batch_alter_table("processed_messages") as batch:
        batch.drop_column("customer_hash")
    op.drop_table("suppressions")
