"""The outbox relay: publishes committed transitions to `lifecycle.stage-changes.v1` and, ahead
of them, the erasures lifecycle passes on to `privacy.erasures.v1`.

Transitions are written to `lifecycle_outbox` in the same transaction as the journey, so nothing
uncommitted is ever published. The relay publishes the oldest rows and deletes them once the
broker acknowledged them; if it does not, the rows stay for the next round (at least once: a
crash after the ack and before the delete publishes them again, so consumers deduplicate by
`transition_id`).

On PostgreSQL the rows are deleted in a transaction that row-locks them while they are published,
so several relays skip each other's rows (SKIP LOCKED) and nobody else waits. On SQLite such a
transaction would lock the whole database for as long as the broker takes to answer (up to the
produce timeout, every round of a broker outage), so a relay claims the rows for a lease in one
short transaction, publishes outside any transaction, then deletes them (or releases them on
failure) in another. Rows of a relay that died mid-publish are taken again when the lease ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.lifecycle.tables import lifecycle_outbox
from shared import metrics
from shared.events import ERASURES
from shared.kafka import OutgoingMessage, Publisher
from shared.runtime import ConsumerService

log = logging.getLogger(__name__)
BATCH = 500
# Erasures jump the queue: a stage change for anyone else may wait, an erasure may not (the
# erased customer's own unsent stage changes are deleted with it). One scan of the outbox.
FIRST = (case((lifecycle_outbox.c.topic == ERASURES, 0), else_=1), lifecycle_outbox.c.id)


def relay_once(sessions: sessionmaker[Session], publisher: Publisher, lease_s: float = 30) -> int:
    """Publish up to BATCH queued rows, erasures first, then the oldest; returns how many."""
    box = lifecycle_outbox.c
    if sessions.kw["bind"].dialect.name == "sqlite":
        return _relay_claimed(sessions, publisher, lease_s)
    oldest = (
        select(box.id).order_by(*FIRST).limit(BATCH).with_for_update(skip_locked=True)
    ).scalar_subquery()
    with sessions.begin() as session:
        rows = session.execute(
            delete(lifecycle_outbox)
            .where(box.id.in_(oldest))
            .returning(box.id, box.topic, box.key, box.payload)
        ).all()
        _publish(publisher, rows)
    return len(rows)


def _relay_claimed(sessions: sessionmaker[Session], publisher: Publisher, lease_s: float) -> int:
    box = lifecycle_outbox.c
    now = datetime.now(UTC)
    unclaimed = or_(box.claimed_until.is_(None), box.claimed_until < now)
    oldest = select(box.id).where(unclaimed).order_by(*FIRST).limit(BATCH).scalar_subquery()
    with sessions.begin() as session:
        rows = session.execute(
            update(lifecycle_outbox)
            .where(box.id.in_(oldest))
            .values(claimed_until=now + timedelta(seconds=lease_s))
            .returning(box.id, box.topic, box.key, box.payload)
        ).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    try:
        _publish(publisher, rows)
    except BaseException:
        with sessions.begin() as session:  # for the next round, without waiting for the lease
            session.execute(
                update(lifecycle_outbox).where(box.id.in_(ids)).values(claimed_until=None)
            )
        raise
    with sessions.begin() as session:
        session.execute(delete(lifecycle_outbox).where(box.id.in_(ids)))
    return len(rows)


def _publish(publisher: Publisher, rows: Sequence[Any]) -> None:
    """Publish outbox rows, erasures first, the rest in the order they were written; raises
    unless all were acknowledged."""
    publisher.publish(
        [
            OutgoingMessage(row.topic, row.key, row.payload.encode())
            for row in sorted(rows, key=lambda r: (r.topic != ERASURES, r.id))
        ]
    )


def pending(sessions: sessionmaker[Session]) -> int:
    """Rows not yet published (claimed ones included)."""
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(lifecycle_outbox)) or 0


def relay(service: ConsumerService, stop: threading.Event) -> None:
    """A service worker: relay until `stop`, pausing when the outbox is empty or on failure."""
    settings = service.settings
    publisher = Publisher(
        settings.kafka_bootstrap, client_id="lifecycle-outbox", timeout_s=settings.produce_timeout_s
    )
    pause = settings.outbox_interval_s
    # A publish takes at most the produce timeout, plus as much again to reconnect first.
    lease_s = 3 * settings.produce_timeout_s
    try:
        while not stop.is_set():
            try:
                # Counted before the round: never reads 0 while a row waits (a clean stop drains)
                metrics.OUTBOX_PENDING.set(pending(service.sessions))
                sent = relay_once(service.sessions, publisher, lease_s=lease_s)
            except Exception as exc:
                log.warning("outbox relay failed, will retry: %s", type(exc).__name__)
                stop.wait(min(pause * 10, 2.0))
                continue
            if sent < BATCH:
                stop.wait(pause)
    finally:
        publisher.close()
