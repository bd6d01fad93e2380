"""Deduplication is scoped to the sender: a processed-message record is keyed by its consumer,
message id and scope (a hash of the event's source and customer key)

Rows written before this revision get the empty scope: their source was never stored and their
customer key only as a one-way hash, so no event's scope matches them again (see
docs/ingest-limits.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("processed_messages", recreate="auto") as batch:
        batch.add_column(sa.Column("scope", sa.String(32), nullable=False, server_default=""))
        batch.drop_constraint("pk_processed_messages", type_="primary")
        batch.create_primary_key("pk_processed_messages", ["consumer", "message_id", "scope"])


def downgrade() -> None:
    # One record per (consumer, message id) may stay: the one of the smallest scope.
    op.execute(
        "DELETE FROM processed_messages WHERE EXISTS (SELECT 1 FROM processed_messages AS p "
        "WHERE p.consumer = processed_messages.consumer "
        "AND p.message_id = processed_messages.message_id AND p.scope < processed_messages.scope)"
    )
    with op.batch_alter_table("processed_messages", recreate="auto") as batch:
        batch.drop_constraint("pk_processed_messages", type_="primary")
        batch.create_primary_key("pk_processed_messages", ["consumer", "message_id"])
        batch.drop_column("scope")
