"""SQL writes of the scoring service: load and save the purchase state a batch touches, the RFM
population histogram and fitted models (reads for the API and refits: queries.py). Never commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.scoring.counters import Counters, Day, Order, PurchaseBook
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
        execute_many(session, _order_upsert(session), _rows(book.orders, "order_id"))
    if book.days:
        execute_many(session, _day_upsert(session), _rows(book.days, "day"))


def _rows(items: Mapping[tuple[str, Any], object], key: str) -> list[dict[str, Any]]:
    """Rows keyed by customer and `key`, in key order, with the value's fields."""
    return [{"customer_id": c, key: k, **vars(value)} for (c, k), value in sorted(items.items())]


def add_to_population(session: Session, deltas: Mapping[tuple[str, int], int]) -> None:
    """Apply histogram deltas as atomic increments (sorted, so instances lock rows in order)."""
    if not deltas:
        return
    execute_many(
        session,
        _population_increment(session),
        [{"dimension": d, "value": v, "customers": n} for (d, v), n in sorted(deltas.items())],
    )


def save_model(session: Session, model: Mapping[str, Any]) -> None:
    session.execute(scoring_models.insert().values(**model))
