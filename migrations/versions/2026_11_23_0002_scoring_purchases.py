"""scoring: purchase counters, orders, purchase days, RFM population, fitted models"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "0002"
down_revision = "0001"

COUNTERS = ("order_count", "revenue_total", "distinct_days", "first_day_net")


def upgrade() -> None:
    with op.batch_alter_table("scoring_customers") as batch:
        batch.add_column(sa.Column("first_purchase_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_purchase_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("order_count", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("revenue_total", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("distinct_days", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("first_day_net", sa.Float(), nullable=False, server_default="0"))
    op.create_table(
        "scoring_orders",
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("order_id", sa.String(255), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("refunded", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "order_id", name=op.f("pk_scoring_orders")),
    )
    op.create_table(
        "scoring_days",
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("net", sa.Float(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "day", name=op.f("pk_scoring_days")),
    )
    op.create_table(
        "scoring_population",
        sa.Column("dimension", sa.String(1), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("customers", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dimension", "value", name=op.f("pk_scoring_population")),
    )
    op.create_table(
        "scoring_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fitted_at", UTCDateTime(), nullable=False),
        sa.Column("observation_end", sa.Date(), nullable=False),
        sa.Column("data_from", sa.Date(), nullable=True),
        sa.Column("n_customers", sa.Integer(), nullable=False),
        sa.Column("n_repeat_buyers", sa.Integer(), nullable=False),
        sa.Column("fit_seconds", sa.Float(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in ("r", "alpha", "a", "b")),
        sa.Column("bgnbd_log_likelihood", sa.Float(), nullable=True),
        *(sa.Column(name, sa.Float(), nullable=True) for name in ("p", "q", "gamma")),
        sa.Column("gamma_gamma_log_likelihood", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_models")),
    )


def downgrade() -> None:
    op.drop_table("scoring_models")
    op.drop_table("scoring_population")
    op.drop_table("scoring_days")
    op.drop_table("scoring_orders")
    with op.batch_alter_table("scoring_customers") as batch:
        for name in ("first_purchase_at", "last_purchase_at", *COUNTERS):
            batch.drop_column(name)
