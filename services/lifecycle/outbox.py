"""The outbox relay: publishes committed transitions to `lifecycle.stage-changes.v1` (and the
erasures lifecycle passes on to `privacy.erasures.v1`).

Transitions are written to `lifecycle_outbox` in the same transaction as the journey, so nothing
uncommitted is ever published. The relay takes the oldest rows out of the outbox and publishes
them inside one transaction: if the broker does not acknowledge, the transaction rolls back and
the rows stay for the next round (at least once; a crash after the ack and before the commit
publishes them again, so consumers deduplicate by `transition_id`). Several instances skip each
other's rows on PostgreSQL (SKIP LOCKED); SQLite runs one writer at a time.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle.tables import lifecycle_outbox
from shared.kafka import OutgoingMessage, Publisher
from shared.runtime import ConsumerService

log = logging.getLogger(__name__)
BATCH = 500


def relay_once(sessions: sessionmaker[Session], publisher: Publisher) -> int:
    """Publish up to BATCH queued transitions, oldest first; returns how many."""
    box = lifecycle_outbox.c
    oldest = (
        select(box.id).order_by(box.id).limit(BATCH).with_for_update(skip_locked=True)
    ).scalar_subquery()
    with sessions.begin() as session:
        rows = session.execute(
            delete(lifecycle_outbox)
            .where(box.id.in_(oldest))
            .returning(box.id, box.topic, box.key, box.payload)
        ).all()
        if rows:
            publisher.publish(
                [
                    OutgoingMessage(row.topic, row.key, row.payload.encode())
                    for row in sorted(rows, key=lambda r: r.id)
                ]
            )
    return len(rows)


def relay(service: ConsumerService, stop: threading.Event) -> None:
    """A service worker: relay until `stop`, pausing when the outbox is empty or on failure."""
    settings = service.settings
    publisher = Publisher(
        settings.kafka_bootstrap, client_id="lifecycle-outbox", timeout_s=settings.produce_timeout_s
    )
    pause = settings.outbox_interval_s
    try:
        while not stop.is_set():
            try:
                sent = relay_once(service.sessions, publisher)
            except Exception as exc:
                log.warning("outbox relay failed, will retry: %s", type(exc).__name__)
                stop.wait(min(pause * 10, 2.0))
                continue
            if sent < BATCH:
                stop.wait(pause)
    finally:
        publisher.close()
