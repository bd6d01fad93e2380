"""Scoring models record the boundary a fit reached ("r,alpha -> inf": no heterogeneity in that
part of the population), as a JSON list
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("scoring_models") as batch:
        batch.add_column(sa.Column("boundary", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("scoring_models") as batch:
        batch.drop_column("boundary")
