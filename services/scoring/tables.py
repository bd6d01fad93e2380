"""Tables the scoring service owns."""

from sqlalchemy import BigInteger, Column, Date, Float, Integer, String, Table, Text

from shared.db import UTCDateTime, metadata
from shared.events import ERASURES
from shared.outbox import outbox_table

scoring_customers = Table(
    "scoring_customers",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("last_channel", String(16), nullable=False),
    Column("first_channel", String(16), nullable=False, server_default="other"),
    # purchase counters (services.scoring.counters.Counters); NULL/0 for non-buyers
    Column("first_purchase_at", UTCDateTime()),
    Column("last_purchase_at", UTCDateTime()),
    Column("order_count", BigInteger, nullable=False, server_default="0"),
    Column("revenue_total", Float, nullable=False, server_default="0"),
    Column("distinct_days", BigInteger, nullable=False, server_default="0"),
    Column("first_day_net", Float, nullable=False, server_default="0"),
)

scoring_orders = Table(
    "scoring_orders",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("order_id", String(255), primary_key=True),
    Column("completed_at", UTCDateTime()),
    Column("amount", Float, nullable=False),
    Column("refunded", Float, nullable=False),
)

scoring_days = Table(
    "scoring_days",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("net", Float, nullable=False),
    Column("orders", Integer, nullable=False),
)

# How many scored customers have each RFM value (services.scoring.rfm): shared by all instances.
scoring_population = Table(
    "scoring_population",
    metadata,
    Column("dimension", String(1), primary_key=True),
    Column("value", BigInteger, primary_key=True),
    Column("customers", BigInteger, nullable=False),
)

scoring_models = Table(
    "scoring_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fitted_at", UTCDateTime(), nullable=False),
    Column("observation_end", Date, nullable=False),
    Column("data_from", Date),
    Column("n_customers", Integer, nullable=False),
    Column("n_repeat_buyers", Integer, nullable=False),
    Column("fit_seconds", Float, nullable=False),
    Column("r", Float),
    Column("alpha", Float),
    Column("a", Float),
    Column("b", Float),
    Column("bgnbd_log_likelihood", Float),
    Column("p", Float),
    Column("q", Float),
    Column("gamma", Float),
    Column("gamma_gamma_log_likelihood", Float),
    Column("boundary", Text),  # JSON list of the limits the fit reached (services.scoring.btyd)
    Column("error", Text),  # why the fit failed; predictions keep the newest row without one
)

# Erasures scoring's API passes on, published by the relay after the commit (shared.outbox).
scoring_outbox = outbox_table("scoring_outbox", metadata, key_length=255, default_topic=ERASURES)
