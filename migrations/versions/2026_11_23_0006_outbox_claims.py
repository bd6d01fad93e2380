"""The lifecycle outbox records until when a relay has claimed a row (SQLite relays publish
outside a transaction, so they must not take each other's rows)
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_outbox") as batch:
        batch.add_column(sa.Column("claimed_until", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_outbox") as batch:
        batch.drop_column("claimed_until")
