"""Scoring models record the boundary a fit reached ("r,alpha -> inf": no heterogeneity in that
part of the population), as a JSON list

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scoring_models") as batch:
        batch.add_column(sa.Column("boundary", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("scoring_models") as batch:
        batch.drop_column("boundary")
