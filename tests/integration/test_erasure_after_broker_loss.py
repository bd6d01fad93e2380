"""The erasure readers read the new log after the embedded broker lost its own: an erasure sent
right after a broker crash is applied by every service and suppressed at ingest. Ingest's reader
reads the topic once while the broker keeps it, and reads partitions added later."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from services.ingest.suppressions import SuppressionList
from shared.db import make_engine, make_session_factory
from shared.events import ERASURES, Erasure, all_topics
from shared.kafka import Publisher, TopicReader, committed_offsets, ensure_topics
from shared.privacy import erasure, erasure_worker
from shared.settings import EMBEDDED_MIN_PARTITIONS, Settings
from tests.support.pipeline import settings_for, wait_for
from touchline.broker import EmbeddedBroker

BEFORE = 30  # erasures before the crash: every partition's position is then well past 1


@dataclass
class Host:
    name: str
    settings: Settings
    sessions: sessionmaker[Session]


def send(bootstrap: str, ids: list[str]) -> None:
    publisher = Publisher(bootstrap, client_id="test-erasures")
    try:
        publisher.publish([erasure([i], "test") for i in ids])
    finally:
        publisher.close()


def restart_empty(broker: EmbeddedBroker, partitions: int = EMBEDDED_MIN_PARTITIONS) -> None:
    broker.stop()
    broker.start()  # memory only: it comes back empty, committed offsets included
    ensure_topics(broker.bootstrap, all_topics(), partitions=partitions)


@dataclass
class Ids:
    user_id: str | None
    anonymous_id: str | None = None
    previous_id: str | None = None


@contextmanager
def erasure_reader(broker: EmbeddedBroker, url: str, seen: list[str]) -> Iterator[None]:
    def erase(session: Session, message: Erasure) -> None:
        seen.extend(message.ids)

    engine = make_engine(url)
    host = Host("test", settings_for(broker.bootstrap, url), make_session_factory(engine))
    stop = threading.Event()
    thread = threading.Thread(target=erasure_worker(erase), args=(host, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        engine.dispose()


def test_a_service_applies_an_erasure_sent_right_after_the_broker_lost_its_log(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    seen: list[str] = []
    with erasure_reader(own_broker, sqlite_url, seen):
        send(own_broker.bootstrap, [f"before-{i}" for i in range(BEFORE)])
        wait_for(lambda: len(set(seen)), lambda n: n == BEFORE, 60, "the first erasures")
        wait_for(
            lambda: sum(committed_offsets(own_broker.bootstrap, "test-erasures").values()),
            lambda n: n == BEFORE,
            30,
            "their offsets committed",
        )
        restart_empty(own_broker)
        send(own_broker.bootstrap, ["after-crash"])
        wait_for(lambda: "after-crash" in seen, bool, 60, "the erasure sent after the crash")


def test_ingest_suppresses_an_id_erased_right_after_the_broker_lost_its_log(
    own_broker: EmbeddedBroker,
) -> None:
    suppressions = SuppressionList(own_broker.bootstrap)
    suppressions.start()
    try:
        send(own_broker.bootstrap, [f"before-{i}" for i in range(BEFORE)])
        wait_for(
            lambda: all(suppressions.suppressed(Ids(f"before-{i}")) for i in range(BEFORE)),
            bool,
            60,
            "the first erasures",
        )
        restart_empty(own_broker)
        send(own_broker.bootstrap, ["after-crash"])
        wait_for(
            lambda: suppressions.suppressed(Ids("after-crash")), bool, 120, "the id erased after"
        )
    finally:
        suppressions.stop()


def test_ingest_reads_every_partition_of_an_erasures_topic_that_came_back_with_more(
    own_broker: EmbeddedBroker,
) -> None:
    after = [f"after-{i}" for i in range(40)]  # keyed at random: some on the new partition
    suppressions = SuppressionList(own_broker.bootstrap)
    suppressions.start()
    try:
        send(own_broker.bootstrap, ["before"])
        wait_for(lambda: suppressions.suppressed(Ids("before")), bool, 60, "the first erasure")
        restart_empty(own_broker, partitions=EMBEDDED_MIN_PARTITIONS + 1)
        send(own_broker.bootstrap, after)
        wait_for(
            lambda: [i for i in after if not suppressions.suppressed(Ids(i))],
            lambda missed: not missed,
            60,
            "every id erased after",
        )
    finally:
        suppressions.stop()


def test_ingest_reads_the_erasures_once_while_the_broker_keeps_its_log(
    own_broker: EmbeddedBroker,
) -> None:
    """One send is one record batch per partition, and the embedded broker's ListOffsets answers
    the start of a partition's last batch: a reader trusting it as the end took its position for
    one past a lost log, and read the whole topic again every second."""
    send(own_broker.bootstrap, [f"erased-{i}" for i in range(BEFORE)])
    reader = TopicReader(own_broker.bootstrap, ERASURES, client_id="test-reader")
    try:
        read: list[bytes] = []

        def caught_up() -> bool:
            read.extend(reader.poll(timeout_ms=200))
            return reader.caught_up()

        wait_for(caught_up, bool, 30, "the reader to catch up")
        assert len(read) == BEFORE
        assert not reader.rewind_if_replaced()
        assert reader.poll(timeout_ms=500) == []
    finally:
        reader.close()


def test_ingest_reads_a_new_log_that_grew_past_its_position_before_it_looked(
    own_broker: EmbeddedBroker,
) -> None:
    """Offsets cannot tell a replaced log that is already longer than the reader's position: the
    topic's new id does (without it, the first records of the new log were skipped)."""
    after = [f"after-{i}" for i in range(40)]  # about ten per partition, from offset 0
    reader = TopicReader(own_broker.bootstrap, ERASURES, client_id="test-reader")
    read: list[str] = []

    def read_all(ids: list[str]) -> list[str]:
        for value in reader.poll(timeout_ms=200):
            read.extend(Erasure.model_validate_json(value).ids)
        reader.rewind_if_replaced()
        return [i for i in ids if i not in read]

    try:
        send(own_broker.bootstrap, ["before"])
        wait_for(lambda: read_all(["before"]), lambda missed: not missed, 30, "the first erasure")
        restart_empty(own_broker)  # the reader is not polled: the new log grows past it first
        send(own_broker.bootstrap, after)
        wait_for(lambda: read_all(after), lambda missed: not missed, 60, "every id erased after")
    finally:
        reader.close()
