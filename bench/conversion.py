"""Conversion API latency (p50/p99) for all five attribution models, with 1M customers and 5M
transitions, on SQLite and PostgreSQL, beside the same service's `/healthz` (the HTTP floor).

Windows of entries: the last 30 and 90 days (`--requests` each), and 365 days (5 requests, so
its "p99" is the slowest of 5).

Population (two years): every customer is a visitor; 90% engage, 80% buy, 60% repeat and 30%
become loyal, each step days to weeks after the one before (steps that would lie in the future
are not taken), plus win-backs up to 5M transitions in all. Every transition has a touch path of
1-5 touches within the 30 days before it, every purchase transition its order, and every stage
entry its funnel row with its credits, as the lifecycle engine writes them.

    .venv/bin/python -m bench.conversion [--customers 1000000] [--transitions 5000000]
        [--requests 30] [--postgres]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import embedded_broker, percentile, postgres_cluster, service, service_env
from services.lifecycle.attribution import MODELS, credits
from services.lifecycle.fold import FunnelEntry
from services.lifecycle.journey import Touch
from services.lifecycle.repository import funnel_row
from services.lifecycle.tables import lifecycle_funnel
from shared.events import CHANNELS
from shared.migrate import upgrade

STAGES = ("visitor", "engaged", "first_purchase", "repeat", "loyal")
REACH = (1.0, 0.9, 0.8, 0.6, 0.3)  # share of customers entering each stage
GAP_DAYS = (0, 5, 12, 40, 90)  # mean days from the previous stage
NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = timedelta(days=730)

CUSTOMER_COLUMNS = (
    "customer_id", "known", "first_touch_at", "first_touch_message", "first_touch_channel",
    "last_touch_at", "event_count", "order_count", "revenue", "stage", "stage_entered_at",
    "last_transition_at", "updated_at",
)  # fmt: skip
TRANSITION_COLUMNS = (
    "id", "customer_id", "kind", "from_stage", "to_stage", "at", "message_id", "channel",
    "touch_path", "recorded_at",
)  # fmt: skip
ORDER_COLUMNS = ("customer_id", "order_id", "at", "message_id", "channel", "amount")


def path(rng: random.Random, at: datetime) -> tuple[str, str, dict[str, tuple[float, ...]]]:
    """A touch path of 1-5 touches in the 30 days up to `at` (the last one at `at`): JSON, the
    channel of the last touch, and the credit per channel of every model (as the engine stores)."""
    times = [at - timedelta(seconds=rng.randrange(30 * 86_400)) for _ in range(rng.randrange(5))]
    touches = [Touch(t, rng.choice(CHANNELS)) for t in [*times, at]]
    items = [[t.at.isoformat(), t.channel] for t in sorted(touches)]
    return orjson.dumps(items).decode(), touches[-1].channel, credits(touches, at)


def population(customers: int, transitions: int) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """(table, rows) chunks: customers, their stage transitions and orders, then win-backs."""
    rng = random.Random(3)
    rows: dict[str, list[tuple[Any, ...]]] = {
        "customers": [], "transitions": [], "orders": [], "funnel": []
    }  # fmt: skip
    written = 0
    for i in range(customers):
        customer = f"c{i}"
        at = NOW - SPAN * rng.random()
        first_at, stage, revenue, orders = at, "visitor", 0.0, 0
        for k, name in enumerate(STAGES):
            if k and (rng.random() > REACH[k] / REACH[k - 1]):
                break
            step = at + timedelta(days=rng.expovariate(1 / GAP_DAYS[k])) if k else at
            if step > NOW:
                break
            at = step
            message = f"{customer}-m{k}"
            touch_path, channel, shares = path(rng, at)
            rows["transitions"].append(
                (f"{i:012d}{k:04d}", customer, "stage", STAGES[k - 1] if k else None, name, at,
                 message, channel, touch_path, at)
            )  # fmt: skip
            written += 1
            amount = round(rng.uniform(10, 300), 2) if k >= 2 else 0.0
            if k >= 2:  # purchase stages: the order that triggered them
                rows["orders"].append((customer, f"o{i}-{k}", at, message, channel, amount))
                revenue, orders = revenue + amount, orders + 1
            entry = FunnelEntry(customer, name, at, channel, amount, shares)
            rows["funnel"].append(tuple(funnel_row(entry).values()))
            stage = name
        rows["customers"].append(
            (customer, True, first_at, f"{customer}-m0", rng.choice(CHANNELS), at, 3, orders,
             revenue, stage, at, at, at)
        )  # fmt: skip
        if len(rows["customers"]) >= 50_000:
            yield from ((table, chunk) for table, chunk in rows.items())
            rows = {table: [] for table in rows}
    yield from ((table, chunk) for table, chunk in rows.items())
    winbacks: list[tuple[Any, ...]] = []
    for n in range(max(0, transitions - written)):
        at = NOW - SPAN * rng.random()
        touch_path, channel, _ = path(rng, at)
        customer = f"c{rng.randrange(customers)}"
        winbacks.append(
            (f"w{n:015d}", customer, "reactivated", "lapsed", "active", at, f"w{n}", channel,
             touch_path, at)
        )  # fmt: skip
        if len(winbacks) >= 50_000:
            yield "transitions", winbacks
            winbacks = []
    yield "transitions", winbacks


COLUMNS = {
    "customers": ("lifecycle_customers", CUSTOMER_COLUMNS),
    "transitions": ("lifecycle_transitions", TRANSITION_COLUMNS),
    "orders": ("lifecycle_orders", ORDER_COLUMNS),
    "funnel": ("lifecycle_funnel", tuple(c.name for c in lifecycle_funnel.c)),
}


Chunks = list[tuple[str, list[tuple[Any, ...]]]]


def fill_sqlite(url: str, chunks: Chunks) -> None:
    def text(value: Any) -> Any:
        if isinstance(value, datetime):  # stored as UTCDateTime does on SQLite
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    for kind, rows in chunks:
        table, columns = COLUMNS[kind]
        marks = ", ".join("?" for _ in columns)
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            ([text(v) for v in row] for row in rows),
        )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(url: str, chunks: Chunks) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for kind, rows in chunks:
            table, columns = COLUMNS[kind]
            with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    with psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load


def latencies(url: str, path: str, params: dict[str, str], requests: int) -> tuple[float, float]:
    headers = {"Authorization": "Bearer bench-read"}
    times = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        client.get(path, params=params).raise_for_status()  # warm up
        for _ in range(requests):
            started = time.perf_counter()
            client.get(path, params=params).raise_for_status()
            times.append(time.perf_counter() - started)
    return percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--transitions", type=int, default=5_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="touchline-bench-"))
    started = time.perf_counter()
    chunks = list(population(args.customers, args.transitions))
    print(f"population generated in {time.perf_counter() - started:.0f}s")
    with postgres_cluster(args.postgres) as cluster, embedded_broker() as broker:
        databases = {"SQLite": f"sqlite:///{work / 'conversion.db'}"}
        if cluster is not None:
            databases["PostgreSQL"] = cluster.create_database("conversion")
        for label, url in databases.items():
            upgrade(url)
            started = time.perf_counter()
            (fill_postgres if label == "PostgreSQL" else fill_sqlite)(url, chunks)
            print(
                f"[{label}] {args.customers:,} customers, {args.transitions:,} transitions "
                f"written in {time.perf_counter() - started:.0f}s"
            )
            env = service_env(broker.bootstrap, url, TOUCHLINE_RUN_CONSUMER="false")
            with service("lifecycle", env, "TOUCHLINE_LIFECYCLE_PORT") as running:
                api = running.url
                floor = latencies(api, "/healthz", {}, args.requests)
                print(f"[{label}] GET /healthz (HTTP floor): p50 {floor[0]:.1f} ms, p99 "
                      f"{floor[1]:.1f} ms")  # fmt: skip
                for days, requests in ((30, args.requests), (90, args.requests), (365, 5)):
                    window = {
                        "since": (NOW - timedelta(days=days)).isoformat(),
                        "until": NOW.isoformat(),
                    }
                    for model in MODELS:
                        params = {"from": "engaged", "to": "first_purchase", "model": model}
                        p50, p99 = latencies(api, "/v1/conversion", params | window, requests)
                        print(
                            f"[{label}] conversion, {days:>3}-day window, {model:<14}: "
                            f"p50 {p50:6.0f} ms, p99 {p99:6.0f} ms "
                            f"(x{p50 / floor[0]:.0f} the HTTP floor at p50)"
                        )


if __name__ == "__main__":
    main()
