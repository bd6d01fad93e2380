"""lifecycle: customers with stage facts, identities, touches, orders, refunds, transitions,
outbox (replaces the minimal lifecycle_customers summary)
"""

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

revision = "0003"
down_revision = "0002"

ID = 255


def upgrade() -> None:
    # The minimal summary held nothing the engine can rebuild from; replay touchpoints.v1 instead.
    op.drop_table("lifecycle_customers")
    op.create_table(
        "lifecycle_customers",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("known", sa.Boolean(), nullable=False),
        sa.Column("first_touch_at", UTCDateTime(), nullable=False),
        sa.Column("first_touch_message", sa.String(128), nullable=False),
        sa.Column("first_touch_channel", sa.String(16), nullable=False),
        sa.Column("last_touch_at", UTCDateTime(), nullable=False),
        sa.Column("engaged_at", UTCDateTime(), nullable=True),
        sa.Column("engaged_message", sa.String(128), nullable=True),
        sa.Column("engaged_channel", sa.String(16), nullable=True),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("order_count", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("last_order_at", UTCDateTime(), nullable=True),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("stage_entered_at", UTCDateTime(), nullable=False),
        sa.Column("last_transition_at", UTCDateTime(), nullable=False),
        sa.Column("reset_stage", sa.String(64), nullable=True),
        sa.Column("reset_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_lifecycle_customers")),
    )
    op.create_index(
        op.f("ix_lifecycle_customers_stage"), "lifecycle_customers", ["stage"], unique=False
    )
    op.create_table(
        "lifecycle_ids",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_ids")),
    )
    op.create_index(
        op.f("ix_lifecycle_ids_customer_id"), "lifecycle_ids", ["customer_id"], unique=False
    )
    op.create_table(
        "lifecycle_touches",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id", "at", "message_id", name=op.f("pk_lifecycle_touches")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "lifecycle_orders",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("order_id", sa.String(ID), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "order_id", name=op.f("pk_lifecycle_orders")),
    )
    op.create_table(
        "lifecycle_refunds",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "message_id", name=op.f("pk_lifecycle_refunds")),
    )
    op.create_table(
        "lifecycle_transitions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_stage", sa.String(64), nullable=True),
        sa.Column("to_stage", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("touch_path", sa.Text(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_transitions")),
    )
    op.create_index(
        op.f("ix_lifecycle_transitions_customer_id"),
        "lifecycle_transitions",
        ["customer_id", "at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_lifecycle_transitions_kind"),
        "lifecycle_transitions",
        ["kind", "to_stage", "at"],
        unique=False,
    )
    op.create_table(
        "lifecycle_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(ID), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_outbox")),
    )


def downgrade() -> None:
    for table in (
        "lifecycle_outbox",
        "lifecycle_transitions",
        "lifecycle_refunds",
        "lifecycle_orders",
        "lifecycle_touches",
        "lifecycle_ids",
        "lifecycle_customers",
    ):
        op.drop_table(table)
    op.create_table(
        "lifecycle_customers",
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("last_channel", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_lifecycle_customers")),
    )
