"""Erasure ahead of the backlog, through the real broker and both databases: lifecycle's relay
publishes a queued erasure before the stage changes written earlier, and the suppression list kept
in the database is republished to a broker that forgot it, for ingest and both consumers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services.ingest.suppressions import SuppressionList
from services.lifecycle import erasure as lifecycle_erasure
from services.lifecycle.tables import lifecycle_outbox
from services.scoring import erasure as scoring_erasure
from shared.db import make_engine
from shared.events import ERASURES, STAGE_CHANGES, Erasure
from shared.kafka import Publisher
from shared.outbox import BATCH, relay_once
from shared.privacy import id_hash, republish_suppressions, suppressions
from tests.support.lifecycle import day, touch
from tests.support.pipeline import read_topic
from touchline.broker import EmbeddedBroker


def test_the_relay_publishes_an_erasure_ahead_of_a_stage_change_backlog(
    broker: EmbeddedBroker, db_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    erased = f"{run}-erased"
    backlog = 2 * BATCH + 10
    engine = make_engine(db_url)
    db = sessionmaker(engine)
    publisher = Publisher(broker.bootstrap, client_id="test-priority", timeout_s=10)
    try:
        with db.begin() as session:
            now = datetime.now(UTC)
            session.execute(
                lifecycle_outbox.insert(),
                [
                    {
                        "topic": STAGE_CHANGES,
                        "key": f"{run}-{n}",
                        "payload": "{}",
                        "created_at": now,
                    }
                    for n in range(backlog)
                ],
            )
            lifecycle_erasure.erase(session, [erased], announce=True)  # queued last
        assert relay_once(db, lifecycle_outbox, publisher) == BATCH
        with db() as session:
            left = session.scalars(select(lifecycle_outbox.c.topic)).all()
        assert ERASURES not in left and len(left) == backlog + 1 - BATCH
        (record,) = read_topic(broker.bootstrap, ERASURES, erased, 1)
        assert Erasure.model_validate_json(record.value).ids == [erased]
    finally:
        publisher.close()
        engine.dispose()


def test_the_suppression_list_is_republished_from_the_database(
    own_broker: EmbeddedBroker, db_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    by_lifecycle, by_scoring = f"{run}-erased-in-lifecycle", f"{run}-erased-in-scoring"
    engine = make_engine(db_url)
    db = sessionmaker(engine)
    try:
        with db.begin() as session:
            lifecycle_erasure.erase(session, [by_lifecycle], announce=False)
            scoring_erasure.erase(session, [by_scoring])
        # The broker's memory is all there was of the erasures topic: ingest starts empty-handed.
        assert republish_suppressions(db_url, own_broker.bootstrap) == 2
        ingest = SuppressionList(own_broker.bootstrap)
        ingest.start()
        try:
            assert ingest.wait_ready(30)
            assert ingest.suppressed(touch(day(0), user=by_lifecycle))
            assert ingest.suppressed(touch(day(0), anon=by_scoring))
            assert not ingest.suppressed(touch(day(0), user=f"{run}-someone-else"))
        finally:
            ingest.stop()
        # Each consumer learns the other's erasures from the republished hashes.
        (record,) = read_topic(own_broker.bootstrap, ERASURES, id_hash(by_scoring), 1)
        seed = Erasure.model_validate_json(record.value)
        assert seed.ids == [] and sorted(seed.id_hashes) == sorted(
            [id_hash(by_lifecycle), id_hash(by_scoring)]
        )
        with db.begin() as session:
            lifecycle_erasure.erase_from_topic(session, seed)
            scoring_erasure.erase_from_topic(session, seed)
        with db() as session:
            s = suppressions.c
            rows = session.execute(
                select(s.consumer, func.count())
                .where(s.id_hash.in_(seed.id_hashes))
                .group_by(s.consumer)
            ).all()
        assert dict(rows) == {"lifecycle": 2, "scoring": 2}
    finally:
        engine.dispose()


def test_nothing_is_republished_when_nobody_was_erased(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    assert republish_suppressions(sqlite_url, own_broker.bootstrap) == 0
