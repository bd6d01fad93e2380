"""Lifecycle consumer drain rate, beside a raw kafka-python consumer reading the same topic in
the same run, on SQLite and PostgreSQL, with 10k and 1M customers already in the database (the
per-event cost must not grow with the population).

Workload (the same events for every run): page views, sign-ups and orders by existing known
customers picked uniformly from the population, and new anonymous visitors who browse, identify
(an identity merge) and buy.

    .venv/bin/python -m bench.lifecycle [--events 50000] [--customers 10000,1000000] [--postgres]
"""

from __future__ import annotations

import random
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    consumer_drain,
    drain_arguments,
    embedded_broker,
    postgres_cluster,
    publish_all,
    raw_drain,
)
from bench.payloads import random_uuid
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import (
    lifecycle_customers,
    lifecycle_ids,
    lifecycle_touches,
    lifecycle_transitions,
)
from shared.db import make_engine
from shared.events import CHANNELS, Touchpoint
from shared.migrate import upgrade
from shared.settings import Settings

START = datetime(2025, 1, 1, 12, tzinfo=UTC)


MIXES = {
    # share of: returning page view, returning sign-up, returning order, new anonymous session
    "typical": (0.75, 0.05, 0.05, 0.15),
    "conversion-heavy": (0.6, 0.1, 0.1, 0.2),
}


def workload(count: int, population: int, mix: str) -> list[Touchpoint]:
    """`count` events in time order. New anonymous sessions browse three pages; a third of them
    identify (an identity merge) and buy."""
    rng = random.Random(11)
    # Ids from a stream of their own, so they do not change which events are drawn, and one per
    # mix: both mixes run against the same database, where a repeated anonymous id would land
    # a new session in an existing profile.
    ids = random.Random(f"{mix} ids")
    events: list[Touchpoint] = []
    page, signup, buy, _ = MIXES[mix]

    def add(**fields: Any) -> None:
        at = START + timedelta(days=400 + len(events) // 200, seconds=len(events) % 200)
        events.append(
            Touchpoint(
                message_id=random_uuid(ids),
                source="bench",
                timestamp=at,
                received_at=at,
                channel=rng.choice(CHANNELS),
                **fields,
            )
        )

    def order(user: str) -> None:
        add(
            type="track",
            event="Order Completed",
            user_id=user,
            properties={"order_id": f"{mix}-o{len(events)}"},
            revenue=round(rng.uniform(5, 200), 2),
        )

    session = 0
    while len(events) < count:
        roll = rng.random()
        customer = f"c{rng.randrange(population)}"
        if roll < page:
            add(type="page", user_id=customer, context={"page": {"path": "/pricing"}})
        elif roll < page + signup:
            add(type="track", event="Signed Up", user_id=customer)
        elif roll < page + signup + buy:
            order(customer)
        else:
            session += 1
            anon, user = random_uuid(ids), f"{mix}-n{session}"
            for _ in range(3):
                add(type="page", anonymous_id=anon)
            if session % 3 == 0:
                add(type="identify", user_id=user, anonymous_id=anon, traits={"email": "x@y.z"})
                order(user)
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
    args = drain_arguments(__doc__, "10000,1000000")
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-"))
    engine = build_engine(Settings(embedded=True, data_dir=work))
    with postgres_cluster(args.postgres) as cluster:
        for size in (int(s) for s in args.customers.split(",")):
            databases = {"SQLite": f"sqlite:///{work / f'lifecycle-{size}.db'}"}
            if cluster is not None:
                databases["PostgreSQL"] = cluster.create_database(f"lifecycle_{size}")
            for url in databases.values():
                upgrade(url)
                populate(url, size)
            for mix in MIXES:
                events = workload(args.events, size, mix)
                with embedded_broker() as broker:  # a broker per run: the topic holds only this
                    publish_all(broker.bootstrap, events)
                    raw = raw_drain(broker.bootstrap, len(events))
                    name = f"{size:>9,} customers, {mix:<16}"
                    print(f"[{name}] raw kafka-python consumer     : {raw:>7.0f} events/s")
                    for label, url in databases.items():
                        rate = consumer_drain(
                            broker.bootstrap, url, len(events), "lifecycle", engine.apply
                        )
                        print(
                            f"[{name}] lifecycle consumer, {label:<10} : {rate:>7.0f} events/s "
                            f"(ratio {rate / raw:.2f}; {1e6 / rate:.0f} us/event)"
                        )


if __name__ == "__main__":
    main()
