"""Tables the scoring service owns."""

from sqlalchemy import BigInteger, Column, String, Table

from shared.db import UTCDateTime, metadata

scoring_customers = Table(
    "scoring_customers",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("last_channel", String(16), nullable=False),
)
