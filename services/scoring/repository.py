"""SQL of the scoring service: load and save the purchase state a batch touches, the RFM
population histogram, fitted models and the data for a refit. Never commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import Result, Row, and_, case, func, or_, select
from sqlalchemy.orm import Session

from services.scoring.counters import Counters, Day, Order, PurchaseBook
from services.scoring.rfm import DIMENSIONS, RfmValues
from services.scoring.tables import (
    scoring_customers,
    scoring_days,
    scoring_models,
    scoring_orders,
    scoring_population,
)
from shared.db import execute_many, once_per_dialect, upsert_into

COUNTER_COLUMNS = tuple(Counters.__dataclass_fields__)
CHUNK = 500


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


@once_per_dialect
def _order_upsert(session: Session) -> Any:
    stmt = upsert_into(session, scoring_orders)
    return stmt.on_conflict_do_update(
        index_elements=[scoring_orders.c.customer_id, scoring_orders.c.order_id],
        set_={c: stmt.excluded[c] for c in ("completed_at", "amount", "refunded")},
    )


@once_per_dialect
def _day_upsert(session: Session) -> Any:
    stmt = upsert_into(session, scoring_days)
    return stmt.on_conflict_do_update(
        index_elements=[scoring_days.c.customer_id, scoring_days.c.day],
        set_={"net": stmt.excluded.net, "orders": stmt.excluded.orders},
    )


@once_per_dialect
def _population_increment(session: Session) -> Any:
    stmt = upsert_into(session, scoring_population)
    return stmt.on_conflict_do_update(
        index_elements=[scoring_population.c.dimension, scoring_population.c.value],
        set_={"customers": scoring_population.c.customers + stmt.excluded.customers},
    )


def load_book(
    session: Session, order_keys: set[tuple[str, str]], event_days: set[tuple[str, date]]
) -> PurchaseBook:
    """The counters, orders and days that purchase events on these keys can change."""
    customers = sorted({c for c, _ in order_keys})
    counters: dict[str, Counters] = {}
    for chunk in _chunks(customers):
        rows = session.execute(
            select(
                scoring_customers.c.customer_id, *(scoring_customers.c[n] for n in COUNTER_COLUMNS)
            )
            .where(scoring_customers.c.customer_id.in_(chunk))
            .where(scoring_customers.c.order_count > 0)
        )
        for row in rows:
            counters[row.customer_id] = Counters(*row[1:])
    # Selected by customer (an index prefix on both databases; row-value IN lists are slow on
    # PostgreSQL), then narrowed to the keys this batch can change.
    orders: dict[tuple[str, str], Order] = {}
    for chunk in _chunks(customers):
        for row in session.execute(
            select(scoring_orders).where(scoring_orders.c.customer_id.in_(chunk))
        ):
            if (row.customer_id, row.order_id) in order_keys:
                orders[(row.customer_id, row.order_id)] = Order(
                    row.completed_at, row.amount, row.refunded
                )
    days_needed = set(event_days) | {
        (customer, order.completed_at.date())
        for (customer, _), order in orders.items()
        if order.completed_at is not None
    }
    days: dict[tuple[str, date], Day] = {}
    for chunk in _chunks(customers):
        for row in session.execute(
            select(scoring_days).where(scoring_days.c.customer_id.in_(chunk))
        ):
            if (row.customer_id, row.day) in days_needed:
                days[(row.customer_id, row.day)] = Day(row.net, row.orders)
    return PurchaseBook(counters, orders, days)


def save_book(session: Session, book: PurchaseBook) -> None:
    """Write the orders and days; the counters go with the customer's touch summary upsert."""
    if book.orders:
        execute_many(
            session,
            _order_upsert(session),
            [
                {"customer_id": c, "order_id": o, **vars(order)}
                for (c, o), order in sorted(book.orders.items())
            ],
        )
    if book.days:
        execute_many(
            session,
            _day_upsert(session),
            [
                {"customer_id": c, "day": d, **vars(day)}
                for (c, d), day in sorted(book.days.items())
            ],
        )


def add_to_population(session: Session, deltas: Mapping[tuple[str, int], int]) -> None:
    """Apply histogram deltas as atomic increments (sorted, so instances lock rows in order)."""
    if not deltas:
        return
    execute_many(
        session,
        _population_increment(session),
        [{"dimension": d, "value": v, "customers": n} for (d, v), n in sorted(deltas.items())],
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


def save_model(session: Session, model: Mapping[str, Any]) -> None:
    session.execute(scoring_models.insert().values(**model))


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
