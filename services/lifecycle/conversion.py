"""Per-channel conversion in SQL (SQLite and PostgreSQL): who entered a stage, who of them went
on to the next one, how fast, and which channels get the credit under an attribution model.

Definitions (what every number of the conversion API and the dashboard means):

- entered: customers whose entry into `from` lies in [since, until); their channel is the channel
  of the touch that moved them into `from`. After an admin reset, only entries since the reset
  count (the funnel starts again).
- converted: those of them with an entry into `to` at or after that entry (at any time since);
  time to convert = the time between the two entries (median; p90 by nearest rank).
- credited conversions: each conversion's credit spread over its touch path (the touches within
  `lookback_days` before the entry into `to`) by the model in `attribution.py`, summed per
  channel. A conversion with no touch in the window is credited to no channel (`unattributed`).
- credited revenue: credit x the conversion's value, the amount of the order that triggered the
  entry into `to` (0 when it was not an order).
- cohorts: customers by the week (Monday, UTC) and channel of their first touch, and how many of
  them have ever entered each stage.

Everything is aggregated by the database, in one statement per report; Python assembles the few
rows per channel and sorts each channel's times to convert for the median and p90.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from services.lifecycle.attribution import MODELS
from services.lifecycle.tables import CHANNELS, credit_column
from shared.db import UTCDateTime

ALL = "*"
EPSILON_DAYS = 1e-6  # touch ages come from floating-point day counts: keep the boundary touch

# The SQL that differs between the two databases.
_SQLITE = {
    "seconds": "(julianday({later}) - julianday({earlier})) * 86400.0",
    "joined": "group_concat({values})",  # REAL as text: 15 significant digits (us for ~30 years)
    "path": ", json_each(c.touch_path) AS j",
    "index": "j.key",
    "touch_at": "json_extract(j.value, '$[0]')",
    "touch_channel": "json_extract(j.value, '$[1]')",
    "age_days": "(julianday(c.at) - julianday(json_extract(j.value, '$[0]')))",
    "week": "date({column}, 'weekday 0', '-6 days')",
    "entered_order": "ORDER BY customer_id",  # their lookups then walk the key in order
    # a primary-key lookup per entry (SQLite always joins by nested loop)
    "to_entry": """JOIN lifecycle_funnel t
      ON t.customer_id = e.customer_id AND t.stage = :to_stage AND t.entered_at >= e.entered_at""",
}
_POSTGRES = {
    "seconds": "EXTRACT(EPOCH FROM ({later} - {earlier}))::float8",
    "joined": "string_agg(({values})::text, ',')",  # float8 as text: the shortest exact form
    "path": " CROSS JOIN LATERAL jsonb_array_elements(c.touch_path::jsonb)"
    " WITH ORDINALITY AS j(value, i)",
    "index": "j.i",
    "touch_at": "(j.value ->> 0)",
    "touch_channel": "(j.value ->> 1)",
    "age_days": "EXTRACT(EPOCH FROM (c.at - (j.value ->> 0)::timestamptz))::float8 / 86400.0",
    "week": "to_char(date_trunc('week', {column} AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
    # in key order, roughly: byte order sorts several times faster than the database's collation
    "entered_order": 'ORDER BY customer_id COLLATE "C"',
    # LATERAL .. LIMIT 1 (a row per primary key anyway) keeps it a primary-key lookup per entry:
    # otherwise the planner hashes the whole stage (a sequential scan of the funnel)
    # (only the columns used: the whole 35-column row per lookup cost a fifth of the time)
    "to_entry": """CROSS JOIN LATERAL (
        SELECT f.entered_at, f.value{lateral_columns} FROM lifecycle_funnel f
        WHERE f.customer_id = e.customer_id AND f.stage = :to_stage AND f.entered_at >= e.entered_at
        LIMIT 1
    ) t""",
}

# Raw credit of a touch at position rn of n (oldest first); ties are averaged afterwards.
_WEIGHTS = {
    "first_touch": "CASE WHEN rn = 1 THEN 1.0 ELSE 0.0 END",
    "last_touch": "CASE WHEN rn = n THEN 1.0 ELSE 0.0 END",
    "linear": "1.0 / n",
    "time_decay": "decay / decay_sum",
    "position_based": (
        "CASE WHEN n <= 2 THEN 1.0 / n WHEN rn = 1 OR rn = n THEN 0.4 ELSE 0.2 / (n - 2) END"
    ),
}
assert set(_WEIGHTS) == set(MODELS)

# Entries into `from` in the window (an index range), and their entries into `to` (a primary
# key lookup each, in customer order). MATERIALIZED: computed once for the whole statement.
_CONVERTED = """
WITH entered AS MATERIALIZED (
    SELECT customer_id, entered_at, channel FROM lifecycle_funnel
    WHERE stage = :from_stage AND entered_at >= :since AND entered_at < :until
    {entered_order}
),
converted AS MATERIALIZED (
    SELECT e.customer_id, e.channel AS entry_channel, e.entered_at, t.entered_at AS at,
           t.value{credit_columns}
    FROM entered e {to_entry}
)
"""

# Everything in one statement, as (kind, entry channel, count, times, credit sums...) rows: entries
# per channel; per channel the conversions and all their times to convert (median and p90 need
# them all), joined into one text value that Python splits and sorts (returned as a row each, they
# took longer than the join itself; SQL window functions longer still); and in the same pass the
# sums of the credit per credited channel stored with the entries into `to` (the configured
# lookback) and of its revenue, which Python adds up over the entry channels.
_REPORT = (
    _CONVERTED
    + """
SELECT 'entered', channel, COUNT(*), NULL{no_sums} FROM entered GROUP BY channel
UNION ALL
SELECT 'converted', entry_channel, COUNT(*), {joined}{credit_sums}
FROM converted GROUP BY entry_channel
"""
)

# Credit for a shorter lookback: the stored touch paths, cut to the window and weighed here.
_PATH_CREDITS = (
    _CONVERTED
    + """,
valued AS (
    SELECT c.customer_id AS id, c.value, c.at, t.touch_path
    FROM converted c
    JOIN lifecycle_transitions t
      ON t.customer_id = c.customer_id AND t.kind = 'stage' AND t.to_stage = :to_stage
     AND t.at = c.at
),
touches AS (
    SELECT c.id, c.value, {index} AS idx, {touch_at} AS touch_at,
           {touch_channel} AS channel, {age_days} AS age
    FROM valued c{path}
),
ranked AS (
    SELECT id, value, touch_at, channel, POWER(0.5, age / 7.0) AS decay,
           ROW_NUMBER() OVER (PARTITION BY id ORDER BY idx) AS rn,
           COUNT(*) OVER (PARTITION BY id) AS n,
           SUM(POWER(0.5, age / 7.0)) OVER (PARTITION BY id) AS decay_sum
    FROM touches
    WHERE age <= :lookback_days
),
weighted AS (SELECT id, value, touch_at, channel, {weight} AS w FROM ranked),
shared AS (
    SELECT value, channel, AVG(w) OVER (PARTITION BY id, touch_at) AS w FROM weighted
)
SELECT channel, SUM(w), SUM(w * value) FROM shared GROUP BY channel
"""
)

_COHORTS = """
WITH acquired AS (
    SELECT customer_id, {week} AS week, first_touch_channel AS channel
    FROM lifecycle_customers
    WHERE first_touch_at >= :since AND first_touch_at < :until
)
SELECT week, channel, NULL, COUNT(*) FROM acquired GROUP BY week, channel
UNION ALL
SELECT a.week, a.channel, t.to_stage, COUNT(DISTINCT a.customer_id)
FROM acquired a
JOIN lifecycle_transitions t ON t.customer_id = a.customer_id AND t.kind = 'stage'
GROUP BY a.week, a.channel, t.to_stage
"""


@dataclass
class ChannelConversion:
    channel: str
    entered: int = 0
    converted: int = 0
    median_seconds: float | None = None
    p90_seconds: float | None = None
    credited_conversions: float = 0.0
    credited_revenue: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None


@dataclass
class Conversion:
    from_stage: str
    to_stage: str
    model: str
    channels: list[ChannelConversion]
    total: ChannelConversion
    unattributed: float


@dataclass
class Cohort:
    week: str
    channel: str
    acquired: int = 0
    reached: dict[str, int] = field(default_factory=dict)


def _sql(
    session: Session, template: str, credit_columns: Sequence[str] = (), **fragments: str
) -> Any:
    """`template` for the session's database; `credit_columns`: the funnel's credit columns the
    report sums (those of one model)."""
    dialect = _POSTGRES if session.get_bind().dialect.name == "postgresql" else _SQLITE
    values = {**dialect, **fragments}
    values["lateral_columns"] = "".join(f", f.{column}" for column in credit_columns)
    values["to_entry"] = dialect["to_entry"].format(**values)
    values["credit_columns"] = "".join(f", t.{column}" for column in credit_columns)
    values["credit_sums"] = "".join(
        f", SUM({column}), SUM({column} * value)" for column in credit_columns
    )
    values["no_sums"] = ", NULL, NULL" * len(credit_columns)
    values["seconds"] = dialect["seconds"].format(later="at", earlier="entered_at")
    values["joined"] = dialect["joined"].format(values=values["seconds"])
    values["week"] = dialect["week"].format(column="first_touch_at")
    return text(template.format(**values)).bindparams(
        bindparam("since", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime())
    )


def _without_jit(session: Session) -> None:
    """PostgreSQL's JIT compiles these queries (their estimated cost is high) for longer (~0.7 s
    at 1M customers) than they take to run: off for this transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


def conversion(
    session: Session,
    *,
    from_stage: str,
    to_stage: str,
    model: str,
    since: datetime,
    until: datetime,
    lookback_days: float,
    recorded_lookback_days: float,
) -> Conversion:
    """Conversion from `from_stage` to `to_stage` for the entries into `from_stage` in the
    window, per channel and in total, credited under `model` (one of attribution.MODELS).

    Credit over the lookback the paths were recorded with was computed when they were written
    (lifecycle_funnel's credit columns); a shorter lookback weighs the stored paths here."""
    if model not in _WEIGHTS:
        raise ValueError(f"unknown attribution model {model!r}; one of {', '.join(MODELS)}")
    params = {"from_stage": from_stage, "to_stage": to_stage, "since": since, "until": until}
    rows = {c: ChannelConversion(c) for c in (*CHANNELS, ALL)}
    _without_jit(session)
    stored = lookback_days >= recorded_lookback_days
    columns = [credit_column(model, c) for c in CHANNELS] if stored else []
    seconds: dict[str, list[float]] = {}
    for kind, channel, count, times, *sums in session.execute(
        _sql(session, _REPORT, credit_columns=columns), params
    ):
        if kind == "entered":
            rows[channel].entered = int(count)
            rows[ALL].entered += int(count)
            continue
        seconds[channel] = list(map(float, times.split(",")))
        if not columns:
            continue
        for credited, credit, revenue in zip(CHANNELS, sums[::2], sums[1::2], strict=True):
            for target in (rows[credited], rows[ALL]):
                target.credited_conversions += float(credit)
                target.credited_revenue += float(revenue)
    seconds[ALL] = [s for times in list(seconds.values()) for s in times]
    for channel, times in seconds.items():
        if times:
            row, n = rows[channel], len(times)
            times.sort()
            row.converted = n
            row.median_seconds = (times[(n + 1) // 2 - 1] + times[(n + 2) // 2 - 1]) / 2
            row.p90_seconds = times[(9 * n + 9) // 10 - 1]
    if not stored:
        credits = session.execute(
            _sql(session, _PATH_CREDITS, weight=_WEIGHTS[model]),
            {**params, "lookback_days": lookback_days + EPSILON_DAYS},
        )
        for channel, credited, revenue in credits:
            for target in (rows[channel], rows[ALL]):
                target.credited_conversions += float(credited)
                target.credited_revenue += float(revenue)
    total = rows.pop(ALL)
    return Conversion(
        from_stage=from_stage,
        to_stage=to_stage,
        model=model,
        channels=list(rows.values()),
        total=total,
        unattributed=max(0.0, total.converted - total.credited_conversions),
    )


def cohorts(session: Session, *, since: datetime, until: datetime) -> list[Cohort]:
    """Customers acquired per (week, first-touch channel) and how many ever entered each stage."""
    _without_jit(session)
    found: dict[tuple[str, str], Cohort] = {}
    rows = session.execute(_sql(session, _COHORTS), {"since": since, "until": until})
    for week, channel, stage, count in rows:
        cohort = found.setdefault((str(week), channel), Cohort(str(week), channel))
        if stage is None:
            cohort.acquired = count
        else:
            cohort.reached[stage] = count
    return [found[key] for key in sorted(found)]
