"""Helpers for tests that drive real consumers: make touchpoints, publish them, poll the DB."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
from sqlalchemy import Table, select

from shared.consumer_loop import Handler
from shared.db import make_engine
from shared.events import CHANNELS, TOUCHPOINTS, Touchpoint
from shared.kafka import OutgoingMessage, Publisher, Record, Subscription, consumer_lags
from shared.runtime import ConsumerService
from shared.settings import Settings

T = TypeVar("T")


def settings_for(bootstrap: str, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "kafka_bootstrap": bootstrap,
        "write_keys": "test-key:test",
        "read_tokens": "test-read",
        "admin_token": "test-admin",
        "max_poll_interval_ms": 3000,
        "produce_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(bootstrap: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "TOUCHLINE_EMBEDDED": "false",
        "TOUCHLINE_DATABASE_URL": database_url,
        "TOUCHLINE_KAFKA_BOOTSTRAP": bootstrap,
        "TOUCHLINE_WRITE_KEYS": "test-key:test",
        "TOUCHLINE_READ_TOKENS": "test-read",
        "TOUCHLINE_ADMIN_TOKEN": "test-admin",
        "TOUCHLINE_MAX_POLL_INTERVAL_MS": "3000",
    }
    env.update(extra)
    return env


def make_touchpoints(customers: int, per_customer: int) -> list[Touchpoint]:
    """Distinct touchpoints for fresh customers, spread over channels and event times."""
    run = uuid.uuid4().hex[:8]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Touchpoint(
            message_id=f"{run}-{c}-{n}",
            type="track",
            event="Product Viewed",
            user_id=f"{run}-customer-{c}",
            channel=CHANNELS[(c + n) % len(CHANNELS)],
            source="test",
            timestamp=start + timedelta(minutes=7 * n + c),
            received_at=start,
        )
        for c in range(customers)
        for n in range(per_customer)
    ]


def publish(bootstrap: str, events: Sequence[Touchpoint]) -> None:
    publisher = Publisher(bootstrap, client_id="test", timeout_s=30)
    try:
        messages = [OutgoingMessage(TOUCHPOINTS, e.customer_key, e.to_json()) for e in events]
        for start in range(0, len(messages), 1000):
            publisher.publish(messages[start : start + 1000])
    finally:
        publisher.close()


def events_per_customer(
    database_url: str, table: Table, customers: Sequence[str]
) -> dict[str, int]:
    """The stored event count of each of these customers that has a row in `table`."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(table.c.customer_id, table.c.event_count).where(
                    table.c.customer_id.in_(list(customers))
                )
            )
            return {customer: int(count) for customer, count in rows}
    finally:
        engine.dispose()


def total_events(database_url: str, table: Table, customers: Sequence[str]) -> int:
    return sum(events_per_customer(database_url, table, customers).values())


def wait_until_applied(
    database_url: str,
    table: Table,
    customers: Sequence[str],
    count: int,
    timeout_s: float,
    what: str,
) -> None:
    """Poll until `table` counts exactly `count` events for `customers`."""
    wait_for(
        lambda: total_events(database_url, table, customers), lambda n: n == count, timeout_s, what
    )


def wait_until_committed(bootstrap: str, groups: Sequence[str], timeout_s: float) -> None:
    """Poll until each consumer group has committed offsets up to the end of `touchpoints.v1`.
    Applied is not yet committed: a member that rejoins reads again what it did not commit, and a
    broker that loses its log has nothing of an uncommitted group's to lose."""
    wait_for(
        lambda: consumer_lags(bootstrap, {group: [TOUCHPOINTS] for group in groups}),
        lambda lags: not any(any(lag.values()) for lag in lags.values()),
        timeout_s,
        f"{', '.join(groups)} to commit their offsets",
    )


@contextmanager
def running(
    bootstrap: str, database_url: str, name: str, handler: Handler, **overrides: object
) -> Iterator[ConsumerService]:
    """A real consumer service for the duration of the block, stopped after it."""
    settings = settings_for(bootstrap, database_url, **overrides)
    service = ConsumerService(settings, name=name, handler=handler)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def deliveries_read(service: ConsumerService) -> int:
    """What the service's consumer loop has read so far: applied or found to be duplicates."""
    return service.loop.stats.applied + service.loop.stats.duplicates if service.loop else 0


def wait_until_read(service: ConsumerService, count: int, timeout_s: float = 60) -> None:
    """Poll until the service's consumer loop has read at least `count` deliveries."""
    what = f"{service.name} to read every delivery"
    wait_for(lambda: deliveries_read(service), lambda seen: seen >= count, timeout_s, what)


def wait_for(check: Callable[[], T], until: Callable[[T], bool], timeout_s: float, what: str) -> T:
    """Poll `check` until `until(result)` holds; fail with the last result after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {result}")
        time.sleep(0.05)


def read_topic(bootstrap: str, topic: str, match: str, count: int) -> list[Record]:
    """The records of `topic` whose value mentions `match` (a unique id of the test)."""
    reader = Subscription(
        bootstrap, group_id=f"reader-{uuid.uuid4().hex}", topics=[topic], max_poll_interval_ms=3000
    )
    found: list[Record] = []
    try:
        wait_for(
            lambda: (
                found.extend(
                    r
                    for r in reader.poll(max_records=1000, timeout_ms=300)
                    if match in r.value.decode()
                )
                or len(found)
            ),
            lambda n: n >= count,
            30,
            f"{count} records mentioning {match} on {topic}",
        )
    finally:
        reader.close()
    return found


def ready(url: str) -> bool:
    """Does the service at `url` answer /readyz with 200?"""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
