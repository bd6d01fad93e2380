"""The erasure readers read the new log after the embedded broker lost its own: an erasure sent
right after a broker crash is applied by every service and suppressed at ingest."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from services.ingest.suppressions import SuppressionList
from shared.db import make_engine, make_session_factory
from shared.events import Erasure, all_topics
from shared.kafka import Publisher, committed_offsets, ensure_topics
from shared.privacy import erasure, erasure_worker
from shared.settings import Settings
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


def restart_empty(broker: EmbeddedBroker) -> None:
    broker.stop()
    broker.start()  # memory only: it comes back empty, committed offsets included
    ensure_topics(broker.bootstrap, all_topics(), partitions=3)


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
    @dataclass
    class Ids:
        user_id: str | None
        anonymous_id: str | None = None
        previous_id: str | None = None

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
