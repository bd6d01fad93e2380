"""Tables the lifecycle service owns (created by migration 0003).

Every row of a customer is keyed by its canonical customer id; `lifecycle_ids` maps every id
ever seen (userId, anonymousId, alias previousId) to it.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from services.lifecycle.attribution import MODELS
from shared.db import UTCDateTime, metadata
from shared.events import CHANNELS, STAGE_CHANGES
from shared.outbox import outbox_table

ID = 255

lifecycle_customers = Table(
    "lifecycle_customers",
    metadata,
    Column("customer_id", String(ID), primary_key=True),
    Column("known", Boolean, nullable=False),  # identified by a userId
    Column("first_touch_at", UTCDateTime(), nullable=False, index=True),
    Column("first_touch_message", String(128), nullable=False),
    Column("first_touch_channel", String(16), nullable=False),
    Column("last_touch_at", UTCDateTime(), nullable=False),
    Column("engaged_at", UTCDateTime()),
    Column("engaged_message", String(128)),
    Column("engaged_channel", String(16)),
    Column("event_count", BigInteger, nullable=False),
    Column("order_count", Integer, nullable=False),
    Column("revenue", Float, nullable=False),
    Column("last_order_at", UTCDateTime()),
    Column("stage", String(64), nullable=False),
    Column("stage_entered_at", UTCDateTime(), nullable=False),
    Column("last_transition_at", UTCDateTime(), nullable=False),
    Column("reset_stage", String(64)),
    Column("reset_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "stage"),
)

lifecycle_ids = Table(
    "lifecycle_ids",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("customer_id", String(ID), nullable=False, index=True),
)

lifecycle_touches = Table(
    "lifecycle_touches",
    metadata,
    Column("customer_id", String(ID), primary_key=True),
    Column("at", UTCDateTime(), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("channel", String(16), nullable=False),
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree per touch, not two
)

lifecycle_orders = Table(
    "lifecycle_orders",
    metadata,
    Column("customer_id", String(ID), primary_key=True),
    Column("order_id", String(ID), primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("amount", Float, nullable=False),
)

lifecycle_refunds = Table(
    "lifecycle_refunds",
    metadata,
    Column("customer_id", String(ID), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("amount", Float, nullable=False),
)

lifecycle_transitions = Table(
    "lifecycle_transitions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(ID), nullable=False),
    Column("kind", String(16), nullable=False),  # stage | reactivated | reset
    Column("from_stage", String(64)),
    Column("to_stage", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),  # event time (reset: when it was made)
    Column("message_id", String(128)),  # the triggering message (none for a reset)
    Column("channel", String(16)),
    Column("touch_path", Text, nullable=False),  # JSON [[at, channel], ...] within the lookback
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("note", Text),
    Index(None, "customer_id", "at"),
    Index(None, "kind", "to_stage", "at"),
)


def credit_column(model: str, channel: str) -> str:
    return f"credit_{model}_{channel}"


lifecycle_funnel = Table(
    "lifecycle_funnel",
    metadata,  # each customer's live stage entries (since any reset): what conversion reads
    Column("customer_id", String(ID), primary_key=True),
    Column("stage", String(64), primary_key=True),
    Column("entered_at", UTCDateTime(), nullable=False),
    Column("channel", String(16), nullable=False),  # of the touch that moved them in
    Column("value", Float, nullable=False),  # amount of the order that did it (0: not an order)
    # The entry's credit per channel under each attribution model (attribution.py) over its
    # touch path: stored with the row, so conversion sums columns instead of weighing paths.
    *(
        Column(credit_column(model, channel), Float, nullable=False)
        for model in MODELS
        for channel in CHANNELS
    ),
    Index(None, "stage", "entered_at", "channel", "customer_id"),  # a window's entries, index only
    sqlite_with_rowid=False,
)

lifecycle_outbox = outbox_table(
    "lifecycle_outbox", metadata, key_length=ID, default_topic=STAGE_CHANGES
)
