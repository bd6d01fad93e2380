"""Reads of the scoring service: a customer's counters, the RFM population, fitted models and
the data for a refit or a report."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Result, Row, and_, case, func, or_, select
from sqlalchemy.orm import Session

from services.scoring.rfm import DIMENSIONS, RfmValues
from services.scoring.tables import (
    scoring_customers,
    scoring_days,
    scoring_models,
    scoring_population,
)


def population_position(
    session: Session, values: RfmValues
) -> tuple[dict[str, int], dict[str, int]]:
    """Per dimension: customers with a strictly lower value, and all customers."""
    c = scoring_population.c
    below_value = or_(*(and_(c.dimension == d, c.value < getattr(values, d)) for d in DIMENSIONS))
    rows = session.execute(
        select(
            c.dimension, func.sum(c.customers), func.sum(case((below_value, c.customers), else_=0))
        ).group_by(c.dimension)
    )
    totals = dict.fromkeys(DIMENSIONS, 0)
    below = dict.fromkeys(DIMENSIONS, 0)
    for dimension, total, lower in rows:
        totals[dimension] = int(total or 0)
        below[dimension] = int(lower or 0)
    return below, totals


def load_counters(session: Session, customer_id: str) -> Row[Any] | None:
    return session.execute(
        select(scoring_customers).where(scoring_customers.c.customer_id == customer_id)
    ).first()


def rf_cells(session: Session) -> list[tuple[date, int, int]]:
    """(last purchase day, orders, customers) over all buyers, for segment counts."""
    c = scoring_customers.c
    if session.get_bind().dialect.name == "postgresql":
        # the date in UTC, whatever the session's time zone
        day = func.date(func.timezone("UTC", c.last_purchase_at))
    else:
        day = func.date(c.last_purchase_at)
    rows = session.execute(
        select(day, c.order_count, func.count())
        .where(c.order_count > 0)
        .group_by(day, c.order_count)
    )
    return [
        (d if isinstance(d, date) else date.fromisoformat(d), int(o), int(n)) for d, o, n in rows
    ]


def purchase_days(session: Session, observation_end: date) -> Result[Any]:
    """Every buyer's purchase days up to `observation_end`, ordered by customer then day."""
    return session.execute(
        select(scoring_days.c.customer_id, scoring_days.c.day, scoring_days.c.net)
        .where(scoring_days.c.day <= observation_end)
        .order_by(scoring_days.c.customer_id, scoring_days.c.day)
        .execution_options(yield_per=50_000)
    )


def latest_model(session: Session) -> Row[Any] | None:
    """The newest successful fit: a failed refit leaves the last good model in service."""
    return session.execute(
        select(scoring_models)
        .where(scoring_models.c.error.is_(None))
        .order_by(scoring_models.c.id.desc())
        .limit(1)
    ).first()


def latest_attempt(session: Session) -> Row[Any] | None:
    """The newest fit, failed or not."""
    return session.execute(
        select(scoring_models).order_by(scoring_models.c.id.desc()).limit(1)
    ).first()


def purchase_day_range(session: Session) -> tuple[date | None, date | None]:
    """The first and last purchase day of any customer."""
    first, last = session.execute(
        select(func.min(scoring_days.c.day), func.max(scoring_days.c.day))
    ).one()
    return first, last


def first_channels(session: Session) -> dict[str, str]:
    """Every buyer's first-touch channel, by customer id."""
    c = scoring_customers.c
    rows = session.execute(
        select(c.customer_id, c.first_channel).where(c.first_purchase_at.is_not(None))
    )
    return {customer: channel for customer, channel in rows}


def buyers_by_channel(session: Session) -> list[Row[Any]]:
    """Every buyer's first-touch channel and purchase counters (value by acquisition channel)."""
    c = scoring_customers.c
    return list(
        session.execute(
            select(
                c.first_channel,
                c.first_purchase_at,
                c.last_purchase_at,
                c.distinct_days,
                c.revenue_total,
                c.first_day_net,
            ).where(c.first_purchase_at.is_not(None))
        )
    )


def customers_by_channel(session: Session) -> dict[str, int]:
    c = scoring_customers.c
    rows = session.execute(select(c.first_channel, func.count()).group_by(c.first_channel))
    return {channel: int(n) for channel, n in rows}
