"""THE consumer loop against a real broker and real SQLite/PostgreSQL: exactly-once effects under
duplicate delivery, crashes (SIGKILL), poison messages, a database outage and two instances."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

import psycopg
import pytest
from sqlalchemy.orm import Session

from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_customers
from services.scoring import handlers as scoring_handlers
from services.scoring.tables import scoring_customers
from shared.consumer_loop import Handler
from shared.events import TOUCHPOINTS, DeadLetter, Touchpoint, dlq
from shared.kafka import OutgoingMessage, Publisher, Subscription
from tests.support.pipeline import (
    events_per_customer,
    make_touchpoints,
    publish,
    running,
    settings_env,
    settings_for,
    total_events,
    wait_for,
    wait_until_applied,
    wait_until_read,
)
from touchline.broker import EmbeddedBroker

LIFECYCLE = build_engine(settings_for("unused:9092", "sqlite://")).apply


def customers_of(events: Sequence[Touchpoint]) -> list[str]:
    return sorted({e.customer_key for e in events})


def test_every_event_delivered_twice_counts_once(own_broker: EmbeddedBroker, db_url: str) -> None:
    events = make_touchpoints(customers=20, per_customer=10)
    publish(own_broker.bootstrap, events)
    publish(own_broker.bootstrap, events)  # the same message ids again, in later batches
    with (
        running(own_broker.bootstrap, db_url, "lifecycle", LIFECYCLE) as lifecycle,
        running(own_broker.bootstrap, db_url, "scoring", scoring_handlers.apply) as scoring,
    ):
        for service in (lifecycle, scoring):
            wait_until_read(service, 2 * len(events))
            assert service.loop is not None
            assert service.loop.stats.applied == len(events)
            assert service.loop.stats.duplicates == len(events)
    ids = customers_of(events)
    assert total_events(db_url, lifecycle_customers, ids) == len(events)
    assert total_events(db_url, scoring_customers, ids) == len(events)


def _start_consumer(
    bootstrap: str, db_url: str, name: str = "lifecycle"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(bootstrap, db_url, TOUCHLINE_CONSUMER_BATCH_SIZE="50")}
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{name}.consumer"], env=env, stderr=subprocess.DEVNULL
    )


def test_sigkill_mid_batch_then_restart_loses_and_doubles_nothing(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    events = make_touchpoints(customers=100, per_customer=30)
    ids = customers_of(events)
    publish(own_broker.bootstrap, events)
    publish(own_broker.bootstrap, events[::3])  # some delivered twice as well
    counted = 0
    for _ in range(2):
        consumer = _start_consumer(own_broker.bootstrap, db_url)
        counted = wait_for(
            lambda: total_events(db_url, lifecycle_customers, ids),
            lambda n, before=counted: n > before,
            60,
            "the consumer to make progress",
        )
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
        assert counted < len(events), "the kill should land before the end of the replay"

    consumer = _start_consumer(own_broker.bootstrap, db_url)
    try:
        final = wait_for(
            lambda: total_events(db_url, lifecycle_customers, ids),
            lambda n: n >= len(events),
            90,
            "the restarted consumer to catch up",
        )
        assert final == len(events)
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(30) == 0, "SIGTERM must stop the consumer cleanly"
    # Offsets were committed on the clean stop: a new run applies nothing again.
    more = make_touchpoints(customers=1, per_customer=3)
    publish(own_broker.bootstrap, more)
    consumer = _start_consumer(own_broker.bootstrap, db_url)
    try:
        wait_until_applied(
            db_url, lifecycle_customers, customers_of(more), len(more), 60, "the next events"
        )
        assert total_events(db_url, lifecycle_customers, ids) == len(events)
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(30) == 0


def test_poison_messages_go_to_the_dead_letter_topic(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    events = make_touchpoints(customers=5, per_customer=4)
    poison = events[7]

    def failing_for_one(session: Session, batch: Sequence[Touchpoint]) -> None:
        if any(e.message_id == poison.message_id for e in batch):
            raise ValueError("handler cannot apply this event")
        LIFECYCLE(session, batch)

    publisher = Publisher(own_broker.bootstrap, client_id="test")
    publisher.publish([OutgoingMessage(TOUCHPOINTS, "garbage", b"{not json")])
    publisher.close()
    publish(own_broker.bootstrap, events)

    with running(own_broker.bootstrap, sqlite_url, "lifecycle", failing_for_one) as service:
        wait_for(
            lambda: total_events(sqlite_url, lifecycle_customers, customers_of(events)),
            lambda n: n >= len(events) - 1,
            60,
            "every good event",
        )
        # The good events commit one by one before the batch's dead letters are published.
        wait_for(
            lambda: service.loop.stats.dead_lettered if service.loop else 0,
            lambda n: n >= 2,
            30,
            "two dead letters counted",
        )
    assert total_events(sqlite_url, lifecycle_customers, customers_of(events)) == len(events) - 1

    reader = Subscription(
        own_broker.bootstrap, group_id="dlq-reader", topics=[dlq(TOUCHPOINTS)],
        max_poll_interval_ms=3000,
    )  # fmt: skip
    letters: list[DeadLetter] = []
    try:
        wait_for(
            lambda: (
                letters.extend(
                    DeadLetter.model_validate_json(r.value)
                    for r in reader.poll(max_records=100, timeout_ms=500)
                )
                or len(letters)
            ),
            lambda n: n >= 2,
            30,
            "two dead letters",
        )
    finally:
        reader.close()
    errors = sorted(letter.error.split(":")[0] for letter in letters)
    assert errors == ["ValueError", "undecodable"]
    assert {letter.consumer for letter in letters} == {"lifecycle"}
    assert any(poison.message_id in letter.value for letter in letters)


@pytest.mark.postgres
def test_database_outage_stops_progress_then_recovers_without_loss(
    own_broker: EmbeddedBroker, pg_url: str
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    admin_url = pg_url.rsplit("/", 1)[0].replace("+psycopg", "") + "/postgres"

    def set_connections(allowed: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )

    first = make_touchpoints(customers=10, per_customer=5)
    second = make_touchpoints(customers=10, per_customer=5)
    with running(own_broker.bootstrap, pg_url, "lifecycle", LIFECYCLE) as service:
        publish(own_broker.bootstrap, first)
        wait_until_applied(
            pg_url, lifecycle_customers, customers_of(first), len(first), 60, "the first events"
        )
        set_connections(False)
        try:
            publish(own_broker.bootstrap, second)
            wait_for(service.readiness, lambda r: r["consumer"] is not True, 30, "not ready")
            wait_for(service.readiness, lambda r: r["database"] is not True, 10, "database")
        finally:
            set_connections(True)
        wait_for(
            lambda: total_events(pg_url, lifecycle_customers, customers_of(second)),
            lambda n: n >= len(second),
            60,
            "recovery after the outage",
        )
        wait_for(service.readiness, lambda r: all(v is True for v in r.values()), 30, "ready again")
    assert total_events(pg_url, lifecycle_customers, customers_of(first + second)) == len(
        first + second
    )


def test_two_instances_in_one_group_split_partitions_and_count_exactly(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    events = make_touchpoints(customers=60, per_customer=10)
    ids = customers_of(events)
    with (
        running(own_broker.bootstrap, db_url, "lifecycle", LIFECYCLE) as one,
        running(own_broker.bootstrap, db_url, "lifecycle", LIFECYCLE) as two,
    ):
        wait_for(
            lambda: (one.loop is not None) and (two.loop is not None),
            bool,
            30,
            "both members to join",
        )
        publish(own_broker.bootstrap, events)
        wait_for(
            lambda: total_events(db_url, lifecycle_customers, ids),
            lambda n: n >= len(events),
            90,
            "every event",
        )
        assert one.loop is not None and two.loop is not None
        assert one.loop.stats.applied + two.loop.stats.applied == len(events)
        assert one.loop.stats.applied > 0 and two.loop.stats.applied > 0, "partitions were split"
    assert total_events(db_url, lifecycle_customers, ids) == len(events)


@pytest.mark.parametrize("name", ["lifecycle", "scoring"])
def test_two_instances_one_killed_its_partitions_move_and_nothing_is_lost_or_doubled(
    own_broker: EmbeddedBroker, db_url: str, name: str
) -> None:
    """Instance A runs in-process (so the test sees which customers it applies), instance B as a
    process in the same group; B is SIGKILLed while both work through a stream, and A must take
    over B's partitions from B's last committed offsets: every customer ends with exactly its
    events."""
    table = {"lifecycle": lifecycle_customers, "scoring": scoring_customers}[name]
    real: Handler = {"lifecycle": LIFECYCLE, "scoring": scoring_handlers.apply}[name]
    lock = threading.Lock()
    applied_by_a: set[str] = set()

    def handler(session: Session, events: Sequence[Touchpoint]) -> None:
        real(session, events)
        with lock:
            applied_by_a.update(e.customer_key for e in events)

    def a_applied() -> set[str]:
        with lock:
            return set(applied_by_a)

    def partitions_split() -> bool:
        """Whether a probe of new customers was applied partly by A, partly by B."""
        probe = make_touchpoints(customers=12, per_customer=1)
        publish(own_broker.bootstrap, probe)
        customers = customers_of(probe)
        wait_until_applied(db_url, table, customers, len(probe), 60, "a probe to be applied")
        return 0 < len(a_applied() & set(customers)) < len(customers)

    per_customer = 40
    events = make_touchpoints(customers=90, per_customer=per_customer)
    customers = customers_of(events)
    first = [e for i, e in enumerate(events) if i % per_customer < 4]
    rest = [e for i, e in enumerate(events) if i % per_customer >= 4]
    b = _start_consumer(own_broker.bootstrap, db_url, name)
    try:
        with running(own_broker.bootstrap, db_url, name, handler):
            wait_for(partitions_split, bool, 90, "A and B to share the partitions")
            publish(own_broker.bootstrap, first)
            wait_until_applied(db_url, table, customers, len(first), 60, "the first events")
            b_customers = set(customers) - a_applied()
            assert b_customers, "B should own partitions"
            assert b_customers != set(customers), "A should own partitions"

            # B waits (well within its session timeout) while the rest goes out, so that it is
            # killed with work of its own left, not after catching up during the publishing.
            b.send_signal(signal.SIGSTOP)
            publish(own_broker.bootstrap, rest)
            publish(own_broker.bootstrap, rest[::5])  # delivered twice as well
            b.send_signal(signal.SIGCONT)
            b_sorted = sorted(b_customers)
            wait_for(
                lambda: total_events(db_url, table, b_sorted),
                lambda n: n > len(b_customers) * len(first) // len(customers),
                60,
                "B to work on the rest",
            )
            b.send_signal(signal.SIGKILL)
            b.wait(10)
            at_kill = events_per_customer(db_url, table, b_sorted)
            unfinished = {c for c in b_customers if at_kill.get(c, 0) < per_customer}
            assert unfinished, "the kill should land before B finished its partitions"

            final = wait_for(
                lambda: events_per_customer(db_url, table, customers),
                lambda counts: sum(counts.values()) >= len(events),
                90,
                "A to take over B's partitions and finish",
            )
            assert final == dict.fromkeys(customers, per_customer)
            assert unfinished <= a_applied(), "A took over what B left unfinished"
    finally:
        if b.poll() is None:
            b.kill()
            b.wait(10)
