"""conversion and acquisition: lifecycle's funnel of live stage entries with their credit per
channel and model, an index on first touches (cohorts); scoring keeps each customer's
first-touch channel (value by acquisition channel)

The funnel is filled from the journeys already stored, with the attribution rules as they were
when this revision was written, frozen here: a migration never imports live code, so it cannot
change when the code does.
"""

from datetime import datetime, timedelta

import orjson
import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

ID = 255
# Frozen as they were when this revision was written: a migration never follows the live code.
MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
CHANNELS = ("web", "email", "mobile", "social", "other")
HALF_LIFE = timedelta(days=7)

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("scoring_customers") as batch:
        # Existing rows: their last channel is the best estimate there is (replay to correct).
        batch.add_column(
            sa.Column("first_channel", sa.String(16), nullable=False, server_default="other")
        )
    op.execute("UPDATE scoring_customers SET first_channel = last_channel")
    op.create_index(
        "ix_lifecycle_customers_first_touch_at", "lifecycle_customers", ["first_touch_at"]
    )
    funnel = op.create_table(
        "lifecycle_funnel",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        *(
            sa.Column(f"credit_{model}_{channel}", sa.Float(), nullable=False)
            for model in MODELS
            for channel in CHANNELS
        ),
        sa.PrimaryKeyConstraint("customer_id", "stage", name=op.f("pk_lifecycle_funnel")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_lifecycle_funnel_stage",
        "lifecycle_funnel",
        ["stage", "entered_at", "channel", "customer_id"],
    )
    _fill_funnel(funnel)


def _credits(path: list[tuple[datetime, str]], at: datetime) -> dict[str, list[float]]:
    """Each channel's credit under every model (MODELS order); touches at one instant share
    their combined credit."""
    channels = {channel for _, channel in path}
    if len(channels) <= 1:
        return {channel: [1.0] * len(MODELS) for channel in channels}
    touches = sorted(path)
    n = len(touches)
    decay = [0.5 ** (((at - when) / timedelta(days=1)) / (HALF_LIFE / timedelta(days=1)))
             for when, _ in touches]  # fmt: skip
    middle = [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)] if n > 2 else [1 / n] * n
    raw = (
        [1.0 if i == 0 else 0.0 for i in range(n)],
        [1.0 if i == n - 1 else 0.0 for i in range(n)],
        [1.0 / n] * n,
        [d / sum(decay) for d in decay],
        middle,
    )
    runs: list[list[int]] = []
    for i in range(n):
        if i and touches[i][0] == touches[i - 1][0]:
            runs[-1].append(i)
        else:
            runs.append([i])
    shares: dict[str, list[float]] = {}
    for m, weights in enumerate(raw):
        for run in runs:
            share = sum(weights[i] for i in run) / len(run)
            for i in run:
                shares.setdefault(touches[i][1], [0.0] * len(MODELS))[m] += share
    return shares


def _fill_funnel(funnel: sa.Table) -> None:
    """Live stage entries (after a customer's latest reset) of the stored journeys."""
    bind = op.get_bind()
    names = ("customer_id", "kind", "to_stage", "message_id", "channel", "touch_path")
    t = sa.table("lifecycle_transitions", *map(sa.column, names), sa.column("at", UTCDateTime()))
    c = sa.table(
        "lifecycle_customers", sa.column("customer_id"), sa.column("reset_at", UTCDateTime())
    )
    o = sa.table(
        "lifecycle_orders", sa.column("customer_id"), sa.column("message_id"), sa.column("amount")
    )
    rows = bind.execute(
        sa.select(t.c.customer_id, t.c.to_stage, t.c.at, t.c.channel, t.c.touch_path, o.c.amount)
        .join(c, c.c.customer_id == t.c.customer_id)
        .outerjoin(o, (o.c.customer_id == t.c.customer_id) & (o.c.message_id == t.c.message_id))
        .where(t.c.kind == "stage", (c.c.reset_at.is_(None)) | (t.c.at > c.c.reset_at))
    )
    entries = []
    for row in rows:
        path = [(datetime.fromisoformat(when), ch) for when, ch in orjson.loads(row.touch_path)]
        shares = _credits(path, row.at)
        entry = {
            "customer_id": row.customer_id,
            "stage": row.to_stage,
            "entered_at": row.at,
            "channel": row.channel or "other",
            "value": row.amount or 0.0,
        }
        for m, model in enumerate(MODELS):
            for channel in CHANNELS:
                entry[f"credit_{model}_{channel}"] = shares.get(channel, [0.0] * len(MODELS))[m]
        entries.append(entry)
        if len(entries) >= 10_000:
            bind.execute(funnel.insert(), entries)
            entries.clear()
    if entries:
        bind.execute(funnel.insert(), entries)


def downgrade() -> None:
    op.drop_table("lifecycle_funnel")
    op.drop_index("ix_lifecycle_customers_first_touch_at", "lifecycle_customers")
    with op.batch_alter_table("scoring_customers") as batch:
        batch.drop_column("first_channel")
