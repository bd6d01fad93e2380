"""Deduplication is scoped to the sender, through THE consumer loop on both databases: a message id
reused by another customer or another source is another event; the same sender's id twice counts
once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_customers
from services.scoring import handlers as scoring_handlers
from services.scoring.tables import scoring_customers
from shared.db import make_engine
from shared.events import Touchpoint
from tests.support.pipeline import (
    events_per_customer,
    publish,
    running,
    settings_for,
    wait_until_read,
)
from touchline.broker import EmbeddedBroker

LIFECYCLE = build_engine(settings_for("unused:9092", "sqlite://")).apply
START = datetime(2026, 3, 1, tzinfo=UTC)


def event(
    message_id: str, user: str, minute: int, source: str = "web-app", **extra: Any
) -> Touchpoint:
    fields: dict[str, Any] = {"type": "track", "event": "Product Viewed", **extra}
    return Touchpoint(
        message_id=message_id,
        user_id=user,
        channel="web",
        source=source,
        timestamp=START + timedelta(minutes=minute),
        received_at=START,
        **fields,
    )


def order(message_id: str, user: str, minute: int, revenue: float, order_id: str) -> Touchpoint:
    return event(
        message_id,
        user,
        minute,
        event="Order Completed",
        revenue=revenue,
        properties={"order_id": order_id},
    )


def revenues(db_url: str, customers: list[str]) -> dict[str, tuple[float, float]]:
    """Each customer's revenue in lifecycle and in scoring."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            lc = dict(
                conn.execute(
                    select(lifecycle_customers.c.customer_id, lifecycle_customers.c.revenue).where(
                        lifecycle_customers.c.customer_id.in_(customers)
                    )
                ).all()
            )
            sc = dict(
                conn.execute(
                    select(
                        scoring_customers.c.customer_id, scoring_customers.c.revenue_total
                    ).where(scoring_customers.c.customer_id.in_(customers))
                ).all()
            )
        return {c: (lc[c], sc[c]) for c in customers if c in lc and c in sc}
    finally:
        engine.dispose()


def test_a_message_id_is_unique_per_source_and_customer(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    ann, bob, cat = (f"{run}-{name}" for name in ("ann", "bob", "cat"))
    shared_id = f"{run}-order-1"
    events = [
        order(shared_id, ann, 0, 30.0, "a-1"),
        order(shared_id, bob, 1, 20.0, "b-1"),  # another customer reuses ann's message id
        event(shared_id, ann, 2, source="ios-app"),  # another source reuses it for ann
        event(f"{run}-view", cat, 3),
        event(f"{run}-view", cat, 3),  # the same sender's id twice in one batch
    ]
    publish(own_broker.bootstrap, events)
    publish(own_broker.bootstrap, [events[0], events[1]])  # and again in a later batch
    delivered = len(events) + 2
    with (
        running(own_broker.bootstrap, db_url, "lifecycle", LIFECYCLE) as lifecycle,
        running(own_broker.bootstrap, db_url, "scoring", scoring_handlers.apply) as scoring,
    ):
        for service in (lifecycle, scoring):
            wait_until_read(service, delivered)
            assert service.loop is not None
            assert (service.loop.stats.applied, service.loop.stats.duplicates) == (4, 3)
            assert service.loop.stats.dead_lettered == 0
    expected = {ann: 2, bob: 1, cat: 1}
    assert events_per_customer(db_url, lifecycle_customers, list(expected)) == expected
    assert events_per_customer(db_url, scoring_customers, list(expected)) == expected
    assert revenues(db_url, [ann, bob]) == {ann: (30.0, 30.0), bob: (20.0, 20.0)}
