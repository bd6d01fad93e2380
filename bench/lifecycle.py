"""Lifecycle consumer drain rate, beside a raw kafka-python consumer reading the same topic in
the same run, on SQLite and PostgreSQL, with 10k and 1M customers already in the database (the
per-event cost must not grow with the population).

Workload (the same events for every run): page views, sign-ups and orders by existing known
customers picked uniformly from the population, and new anonymous visitors who browse, identify
(an identity merge) and buy.

    .venv/bin/python -m bench.lifecycle [--events 50000] [--customers 10000,1000000] [--postgres]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import consumer_drain, embedded_broker, publish_all, raw_drain
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import (
    lifecycle_customers,
    lifecycle_ids,
    lifecycle_touches,
    lifecycle_transitions,
)
from shared.db import make_engine
from shared.events import Channel, Touchpoint
from shared.migrate import upgrade
from shared.settings import Settings

START = datetime(2025, 1, 1, 12, tzinfo=UTC)
CHANNELS: tuple[Channel, ...] = ("web", "email", "mobile", "social", "other")


def workload(count: int, population: int) -> list[Touchpoint]:
    rng = random.Random(11)
    events: list[Touchpoint] = []

    def add(**fields: Any) -> None:
        at = START + timedelta(days=400 + len(events) // 200, seconds=len(events) % 200)
        events.append(
            Touchpoint(
                message_id=f"m{len(events)}",
                source="bench",
                timestamp=at,
                received_at=at,
                channel=rng.choice(CHANNELS),
                **fields,
            )
        )

    visitor = 0
    while len(events) < count:
        roll = rng.random()
        customer = f"c{rng.randrange(population)}"
        if roll < 0.6:
            add(type="page", user_id=customer, context={"page": {"path": "/pricing"}})
        elif roll < 0.7:
            add(type="track", event="Signed Up", user_id=customer)
        elif roll < 0.8:
            add(
                type="track",
                event="Order Completed",
                user_id=customer,
                properties={"order_id": f"o{len(events)}"},
                revenue=round(rng.uniform(5, 200), 2),
            )
        else:
            visitor += 1
            anon, user = f"a{visitor}", f"n{visitor}"
            add(type="page", anonymous_id=anon)
            add(type="page", anonymous_id=anon)
            add(type="identify", user_id=user, anonymous_id=anon, traits={"email": "x@y.z"})
            add(
                type="track",
                event="Order Completed",
                user_id=user,
                properties={"order_id": f"o{len(events)}"},
                revenue=30.0,
            )
    return events[:count]


def populate(database_url: str, customers: int) -> None:
    """`customers` known visitors, each with an id, a first touch and a visitor transition."""
    engine = make_engine(database_url)
    chunk = 50_000
    with engine.begin() as conn:
        for start in range(0, customers, chunk):
            rows, ids, touches, transitions = [], [], [], []
            for i in range(start, min(start + chunk, customers)):
                customer, at = f"c{i}", START + timedelta(minutes=i % 500_000)
                channel = CHANNELS[i % 5]
                rows.append(
                    {
                        "customer_id": customer,
                        "known": True,
                        "first_touch_at": at,
                        "first_touch_message": f"seed{i}",
                        "first_touch_channel": channel,
                        "last_touch_at": at,
                        "event_count": 1,
                        "order_count": 0,
                        "revenue": 0.0,
                        "stage": "visitor",
                        "stage_entered_at": at,
                        "last_transition_at": at,
                        "updated_at": at,
                    }
                )
                ids.append({"id": customer, "customer_id": customer})
                touches.append(
                    {
                        "customer_id": customer,
                        "at": at,
                        "message_id": f"seed{i}",
                        "channel": channel,
                    }
                )
                transitions.append(
                    {
                        "id": uuid.uuid4().hex,
                        "customer_id": customer,
                        "kind": "stage",
                        "to_stage": "visitor",
                        "at": at,
                        "message_id": f"seed{i}",
                        "channel": channel,
                        "touch_path": "[]",
                        "recorded_at": at,
                    }
                )
            conn.execute(lifecycle_customers.insert(), rows)
            conn.execute(lifecycle_ids.insert(), ids)
            conn.execute(lifecycle_touches.insert(), touches)
            conn.execute(lifecycle_transitions.insert(), transitions)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", default="10000,1000000")
    parser.add_argument("--postgres", action="store_true", help="also drain into PostgreSQL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-"))
    engine = build_engine(Settings(embedded=True, data_dir=work))
    cluster = None
    if args.postgres:
        from tests.support.postgres import PostgresCluster, find_pg_bin

        bin_dir = find_pg_bin()
        assert bin_dir is not None, "PostgreSQL server binaries not found"
        cluster = PostgresCluster(bin_dir)
        cluster.start()
    try:
        for size in (int(s) for s in args.customers.split(",")):
            events = workload(args.events, size)
            with embedded_broker() as broker:  # a broker per run: the topic holds only this
                publish_all(broker.bootstrap, events)
                raw = raw_drain(broker.bootstrap, len(events))
                print(f"[{size:>9,} customers] raw kafka-python consumer    : {raw:>7.0f} events/s")
                databases = {"SQLite": f"sqlite:///{work / f'lifecycle-{size}.db'}"}
                if cluster is not None:
                    databases["PostgreSQL"] = cluster.create_database(f"lifecycle_{size}")
                for label, url in databases.items():
                    upgrade(url)
                    started = time.perf_counter()
                    populate(url, size)
                    filled = time.perf_counter() - started
                    rate = consumer_drain(
                        broker.bootstrap, url, len(events), "lifecycle", engine.apply
                    )
                    print(
                        f"[{size:>9,} customers] lifecycle consumer, {label:<10}: {rate:>7.0f} "
                        f"events/s (ratio {rate / raw:.2f}; {1e6 / rate:.0f} us/event; "
                        f"population written in {filled:.0f} s)"
                    )
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
