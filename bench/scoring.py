"""Scoring benchmarks, each beside its raw-Kafka baseline where there is one:

1. consumer drain rate (purchase events/s) on SQLite and PostgreSQL, beside a raw kafka-python
   consumer reading the same topic in the same run;
2. refit time (read purchase days from the database + BG/NBD + Gamma-Gamma) for 100k and 1M
   synthetic customers;
3. `GET /v1/customers/{id}/scores` latency p50/p99 over HTTP.

    .venv/bin/python -m bench.scoring [--events 50000] [--customers 100000,1000000]
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import (
    consumer_drain,
    drain_arguments,
    embedded_broker,
    percentile,
    postgres_cluster,
    publish_all,
    raw_drain,
    service,
    service_env,
)
from bench.payloads import random_uuid
from services.scoring import handlers
from services.scoring.model import refit
from services.scoring.tables import scoring_customers, scoring_days
from shared.db import make_engine, make_session_factory
from shared.events import Touchpoint
from shared.migrate import upgrade


def purchase_events(count: int, customers: int, purchase_share: float = 1.0) -> list[Touchpoint]:
    """`count` events of which `purchase_share` are orders, the rest page views."""
    rng = random.Random(1)
    ids = random.Random(2)  # its own stream: the ids do not change which events are drawn
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    events = []
    for n in range(count):
        customer = f"c{rng.randrange(customers)}"
        at = start + timedelta(days=rng.randrange(365), minutes=rng.randrange(600))
        # A web touch by `customer` at `at` with these fields.
        web = partial(
            Touchpoint,
            user_id=customer,
            channel="web",
            source="bench",
            timestamp=at,
            received_at=at,
        )
        if rng.random() >= purchase_share:
            page = {"path": "/pricing", "url": "https://shop.example.com/pricing"}
            events.append(
                web(
                    message_id=random_uuid(ids),
                    type="page",
                    event="Pricing",
                    context={"page": page},
                )
            )
            continue
        events.append(
            web(
                message_id=random_uuid(ids),
                type="track",
                event="Order Completed",
                properties={"order_id": f"o{n}", "revenue": 25.0},
                revenue=round(rng.uniform(5, 200), 2),
                currency="USD",
            )
        )
    return events


def populate_days(database_url: str, customers: int) -> None:
    """Synthetic purchase histories drawn from a BG/NBD-like process, written as purchase days."""
    rng = np.random.default_rng(7)
    end = date(2026, 1, 1)
    first = rng.integers(0, 270, customers)
    repeats = rng.negative_binomial(0.5, 0.4, customers).clip(0, 40)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        day_rows, customer_rows = [], []
        for i in range(customers):
            start = end - timedelta(days=int(first[i]) + 1)
            span = int(first[i])
            days = sorted({0, *rng.integers(0, span + 1, int(repeats[i])).tolist()})
            for d in days:
                day_rows.append(
                    {
                        "customer_id": f"c{i}",
                        "day": start + timedelta(days=d),
                        "net": 30.0 + d % 17,
                        "orders": 1,
                    }
                )
            at = datetime(start.year, start.month, start.day, tzinfo=UTC)
            customer_rows.append(
                {
                    "customer_id": f"c{i}",
                    "first_seen": at,
                    "last_seen": at,
                    "event_count": len(days),
                    "last_channel": "web",
                }
            )
            if len(day_rows) >= 100_000:
                conn.execute(scoring_days.insert(), day_rows)
                day_rows = []
        if day_rows:
            conn.execute(scoring_days.insert(), day_rows)
        for start_row in range(0, len(customer_rows), 100_000):
            conn.execute(scoring_customers.insert(), customer_rows[start_row : start_row + 100_000])
    engine.dispose()


def refit_seconds(database_url: str) -> tuple[float, int]:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        started = time.perf_counter()
        row = refit(session, date(2026, 1, 1))
        elapsed = time.perf_counter() - started
    engine.dispose()
    if row["error"]:
        raise RuntimeError(row["error"])
    return elapsed, int(row["n_customers"])


def read_latency(
    bootstrap: str, database_url: str, customers: int, requests: int = 2000
) -> tuple[float, float]:
    env = service_env(
        bootstrap, database_url, TOUCHLINE_RUN_CONSUMER="false", TOUCHLINE_REFIT_INTERVAL_S="0"
    )
    with (
        service("scoring", env, "TOUCHLINE_SCORING_PORT") as running,
        httpx.Client(
            base_url=running.url, headers={"Authorization": "Bearer bench-read"}
        ) as client,
    ):
        rng = random.Random(3)
        latencies = []
        for _ in range(requests):
            path = f"/v1/customers/c{rng.randrange(customers)}/scores"
            t0 = time.perf_counter()
            response = client.get(path)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text
    return percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def drain_all(
    bootstrap: str, name: str, events: list[Touchpoint], work: Path, cluster: Any
) -> None:
    """Publish the workload, then drain it with a raw consumer and into each database."""
    publish_all(bootstrap, events)
    total = len(events)
    raw = raw_drain(bootstrap, total)
    print(f"[{name}] raw kafka-python consumer   : {raw:>9.0f} events/s")
    databases = {"SQLite": f"sqlite:///{work / f'drain-{uuid.uuid4().hex[:6]}.db'}"}
    if cluster is not None:
        databases["PostgreSQL"] = cluster.create_database(f"drain_{uuid.uuid4().hex[:6]}")
    for label, url in databases.items():
        upgrade(url)
        rate = consumer_drain(bootstrap, url, total, "scoring", handlers.apply)
        ratio = rate / raw
        print(f"[{name}] scoring consumer, {label:<10}: {rate:>9.0f} events/s (ratio {ratio:.2f})")


def main() -> None:
    args = drain_arguments(__doc__, "100000,1000000")
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-"))

    workloads = {
        "orders only": purchase_events(args.events, args.events // 5),
        "10% orders": purchase_events(args.events, args.events // 5, purchase_share=0.1),
    }
    with postgres_cluster(args.postgres) as cluster:
        for name, events in workloads.items():
            with embedded_broker() as broker:  # a broker per workload: the topic holds only it
                drain_all(broker.bootstrap, name, events, work, cluster)

    with embedded_broker() as broker:
        for size in (int(s) for s in args.customers.split(",")):
            url = f"sqlite:///{work / f'refit-{size}.db'}"
            upgrade(url)
            populate_days(url, size)
            seconds, n = refit_seconds(url)
            print(f"refit, {n:>9,} customers (SQLite): {seconds:6.1f} s")
            p50, p99 = read_latency(broker.bootstrap, url, size)
            print(f"scores read, {size:>9,} customers: p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
