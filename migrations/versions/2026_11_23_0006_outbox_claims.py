"""The lifecycle outbox records until when a relay has claimed a row (SQLite relays publish
outside a transaction, so they must not take each other's rows)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_outbox") as batch:
        batch.add_column(sa.Column("claimed_until", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_outbox") as batch:
        batch.drop_column("claimed_until")
