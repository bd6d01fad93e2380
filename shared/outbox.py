"""The transactional outbox every consuming service publishes through: messages are written to the
service's outbox table in the same transaction as the change they announce, and one relay
publishes them after the commit, erasures ahead of everything else.

Nothing uncommitted is ever published. The relay publishes the oldest rows and deletes them once
the broker acknowledged them; if it does not, the rows stay for the next round (at least once: a
crash after the ack and before the delete publishes them again, so consumers deduplicate).

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
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from shared.db import UTCDateTime
from shared.events import ERASURES
from shared.kafka import OutgoingMessage, Publisher
from shared.runtime import ConsumerService, Worker

log = logging.getLogger(__name__)
BATCH = 500


def outbox_table(name: str, metadata: MetaData, *, key_length: int, default_topic: str) -> Table:
    """A service's outbox: one row per message waiting to be published."""
    return Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("key", String(key_length), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("topic", String(64), nullable=False, server_default=default_topic),
        Column("claimed_until", UTCDateTime()),  # a SQLite relay is publishing the row until then
    )


def enqueue(session: Session, outbox: Table, messages: Sequence[OutgoingMessage]) -> None:
    """Add messages to the outbox in the caller's transaction: they go out after its commit."""
    if messages:
        now = datetime.now(UTC)
        session.execute(
            outbox.insert(),
            [
                {"topic": m.topic, "key": m.key, "payload": m.value.decode(), "created_at": now}
                for m in messages
            ],
        )


def _first(outbox: Table) -> tuple[Any, ...]:
    # Erasures jump the queue: a stage change for anyone else may wait, an erasure may not (the
    # erased customer's own unsent messages are deleted with it). One scan of the outbox.
    return (case((outbox.c.topic == ERASURES, 0), else_=1), outbox.c.id)


def relay_once(
    sessions: sessionmaker[Session], outbox: Table, publisher: Publisher, lease_s: float = 30
) -> int:
    """Publish up to BATCH queued rows, erasures first, then the oldest; returns how many."""
    box = outbox.c
    if sessions.kw["bind"].dialect.name == "sqlite":
        return _relay_claimed(sessions, outbox, publisher, lease_s)
    oldest = (
        select(box.id).order_by(*_first(outbox)).limit(BATCH).with_for_update(skip_locked=True)
    ).scalar_subquery()
    with sessions.begin() as session:
        rows = session.execute(
            delete(outbox)
            .where(box.id.in_(oldest))
            .returning(box.id, box.topic, box.key, box.payload)
        ).all()
        _publish(publisher, rows)
    return len(rows)


def _relay_claimed(
    sessions: sessionmaker[Session], outbox: Table, publisher: Publisher, lease_s: float
) -> int:
    box = outbox.c
    now = datetime.now(UTC)
    unclaimed = or_(box.claimed_until.is_(None), box.claimed_until < now)
    oldest = select(box.id).where(unclaimed).order_by(*_first(outbox)).limit(BATCH)
    with sessions.begin() as session:
        rows = session.execute(
            update(outbox)
            .where(box.id.in_(oldest.scalar_subquery()))
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
            session.execute(update(outbox).where(box.id.in_(ids)).values(claimed_until=None))
        raise
    with sessions.begin() as session:
        session.execute(delete(outbox).where(box.id.in_(ids)))
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


def pending(sessions: sessionmaker[Session], outbox: Table) -> int:
    """Rows not yet published (claimed ones included)."""
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(outbox)) or 0


def relay(outbox: Table, gauge: Gauge | None = None) -> Worker:
    """A service worker relaying `outbox` until stopped, pausing when it is empty or on failure;
    `gauge` shows the rows waiting."""

    def run(service: ConsumerService, stop: threading.Event) -> None:
        pause = service.settings.outbox_interval_s
        # A publish takes at most the produce timeout, plus as much again to reconnect first.
        lease_s = 3 * service.settings.produce_timeout_s
        with closing(Publisher.of(service.settings, f"{service.name}-outbox")) as publisher:
            while not stop.is_set():
                try:
                    if gauge is not None:  # before the round: never 0 while a row waits
                        gauge.set(pending(service.sessions, outbox))
                    sent = relay_once(service.sessions, outbox, publisher, lease_s=lease_s)
                except Exception as exc:
                    log.warning("%s relay failed, will retry: %s", outbox.name, type(exc).__name__)
                    stop.wait(min(pause * 10, 2.0))
                    continue
                if sent < BATCH:
                    stop.wait(pause)

    return run
