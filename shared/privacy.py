"""GDPR erasure and suppression, the same in every service.

An erasure (`privacy.erasures.v1`) names ids. Each consuming service deletes what it holds for
them, forgets its processed-message records of their events, and adds the ids to its
suppression list; from then on its consumer loop drops their events (late ones, replays,
duplicates) before recording anything. Ingest reads the whole topic and rejects new events for
those ids. Ids are kept only as truncated SHA-256 hashes in the database; the embedded broker
forgets the topic, so `touchline up` republishes those hashes (`republish_suppressions`).

On PostgreSQL an erasure takes an exclusive advisory lock and every consumer batch a shared one
before it checks the list, so no batch can write an id that an erasure committed meanwhile.
SQLite runs one writer at a time, and both start with a write.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Column, String, Table, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import UTCDateTime, make_engine, metadata, processed_messages, upsert_into
from shared.events import ERASURES, DeadLetter, Erasure, Touchpoint, dlq
from shared.kafka import (
    BrokerUnavailable,
    OutgoingMessage,
    Publisher,
    Subscription,
    committed_offsets,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

suppressions = Table(
    "suppressions",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("id_hash", String(32), primary_key=True),
    Column("suppressed_at", UTCDateTime(), nullable=False),
)

SEED_CHUNK = 10_000  # id hashes per republished message: ~350 KB, under Kafka's 1 MB default
LOSS_CHECK_S = 1.0  # how often the erasure reader asks whether the broker lost its offsets
_LOCK_KEY = 7_541_893_201  # the advisory lock erasures and consumer batches share (PostgreSQL)


@functools.lru_cache(maxsize=65_536)  # consumers hash every event's ids, and customers return
def id_hash(any_id: str) -> str:
    """What the database keeps of an id: 128 bits of its SHA-256, in hex."""
    return hashlib.sha256(any_id.encode()).hexdigest()[:32]


class HasIds(Protocol):
    """A Touchpoint, or anything else that names an event's ids (ingest's Accepted)."""

    @property
    def user_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...
    @property
    def previous_id(self) -> str | None: ...


def event_ids(event: HasIds) -> list[str]:
    return [i for i in (event.user_id, event.anonymous_id, event.previous_id) if i]


def _lock(session: Session, *, exclusive: bool) -> None:
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {function}(:key)"), {"key": _LOCK_KEY})


def unsuppressed(session: Session, consumer: str, events: Sequence[Touchpoint]) -> list[Touchpoint]:
    """The events none of whose ids `consumer` suppresses. Holds the shared erasure lock until the
    transaction ends (PostgreSQL), so the check stays true while the batch writes."""
    if not events:
        return []
    _lock(session, exclusive=False)
    s = suppressions.c
    if session.scalar(select(s.id_hash).where(s.consumer == consumer).limit(1)) is None:
        return list(events)  # nothing erased yet: the common case, one index probe
    hashes = [[id_hash(i) for i in event_ids(e)] for e in events]  # hashed once per event
    candidates = sorted({h for own in hashes for h in own})
    found = set(
        session.scalars(select(s.id_hash).where(s.consumer == consumer, s.id_hash.in_(candidates)))
    )
    if not found:
        return list(events)
    return [e for e, own in zip(events, hashes, strict=True) if found.isdisjoint(own)]


def suppress(session: Session, consumer: str, ids: Iterable[str]) -> int:
    """Add ids to `consumer`'s suppression list and delete its processed-message records of their
    events; returns how many such records there were. Takes the exclusive erasure lock first."""
    return suppress_hashes(session, consumer, (id_hash(i) for i in ids))


def suppress_hashes(session: Session, consumer: str, id_hashes: Iterable[str]) -> int:
    """`suppress` for ids known only by their hashes."""
    _lock(session, exclusive=True)
    hashes = sorted(set(id_hashes))
    if not hashes:
        return 0
    now = datetime.now(UTC)
    session.execute(
        upsert_into(session, suppressions).on_conflict_do_nothing(),
        [{"consumer": consumer, "id_hash": h, "suppressed_at": now} for h in hashes],
    )
    p = processed_messages.c
    result = session.execute(
        delete(processed_messages).where(p.consumer == consumer, p.customer_hash.in_(hashes))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def erasure(ids: Iterable[str], origin: str, *, id_hashes: Iterable[str] = ()) -> OutgoingMessage:
    """The message that erases these ids everywhere (and suppresses those named by `id_hashes`),
    keyed by its own id: a compacted topic then keeps every erasure (a key per id could let a
    later, smaller erasure replace a larger one)."""
    message = Erasure(
        erasure_id=uuid.uuid4().hex,
        ids=sorted(set(ids)),
        id_hashes=sorted(set(id_hashes)),
        requested_at=datetime.now(UTC),
        origin=origin,
    )
    return OutgoingMessage(ERASURES, message.erasure_id, message.to_json())


def suppression_seed(hashes: Iterable[str], origin: str) -> OutgoingMessage:
    """An erasure naming ids by their hashes only: the suppression list, republished."""
    return erasure((), origin, id_hashes=hashes)


def republish_suppressions(database_url: str, bootstrap: str, *, timeout_s: float = 10.0) -> int:
    """Publish every id hash any service suppresses, as erasures of up to SEED_CHUNK id hashes;
    returns how many hashes.

    The embedded broker keeps `privacy.erasures.v1` in memory only, while the database keeps each
    service's suppression list: call this after the broker starts and before ingest, so ingest
    rejects every erased id again (and each service learns the others' erasures).
    """
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            hashes = list(connection.scalars(select(suppressions.c.id_hash).distinct()))
    finally:
        engine.dispose()
    if not hashes:
        return 0
    publisher = Publisher(bootstrap, client_id="suppressions-seed", timeout_s=timeout_s)
    chunks = range(0, len(hashes), SEED_CHUNK)
    try:
        publisher.publish([suppression_seed(hashes[i : i + SEED_CHUNK], "seed") for i in chunks])
    finally:
        publisher.close()
    return len(hashes)


Eraser = Callable[[Session, Erasure], object]
"""A service's erasure of everything it holds for an erasure's ids (idempotent; never commits)."""


class ErasureHost(Protocol):
    """What the erasure worker uses of the consuming service that runs it (a ConsumerService)."""

    @property
    def name(self) -> str: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def sessions(self) -> sessionmaker[Session]: ...


ErasureWorker = Callable[[ErasureHost, threading.Event], None]


def erasure_worker(erase: Eraser) -> ErasureWorker:
    """A service worker applying `privacy.erasures.v1` in its own consumer group: one transaction
    per erasure, offsets committed after; unreadable messages go to the topic's dead letters."""

    def run(service: ErasureHost, stop: threading.Event) -> None:
        backoff = 0.2
        with closing(Publisher.of(service.settings, f"{service.name}-erasures")) as publisher:
            while not stop.is_set():
                try:
                    _apply_erasures(service, erase, publisher, stop)
                except Exception as exc:
                    # Database or broker down: nothing was committed, start again after a pause.
                    reason = type(exc).__name__  # not the text: it can quote ids
                    log.warning("erasures for %s will be retried: %s", service.name, reason)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

    return run


def _apply_erasures(
    service: ErasureHost, erase: Eraser, publisher: Publisher, stop: threading.Event
) -> None:
    group = f"{service.name}-erasures"
    bootstrap = service.settings.kafka_bootstrap
    subscription = Subscription(
        bootstrap,
        group_id=group,
        topics=[ERASURES],
        max_poll_interval_ms=service.settings.max_poll_interval_ms,
    )
    committed: dict[tuple[str, int], int] = {}  # what this member committed, per partition
    checked_at = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() - checked_at >= LOSS_CHECK_S:
                checked_at = time.monotonic()
                if log_lost(bootstrap, group, committed):
                    # As THE loop does: positions past the start of the new log would skip the
                    # erasures sent since; reading them again is harmless (erasing is idempotent).
                    log.error("the broker lost %s's offsets: reading %s again", group, ERASURES)
                    committed.clear()
                    subscription.rewind_to_start()
            records = subscription.poll(max_records=100, timeout_ms=500)
            for record in records:
                try:
                    message = Erasure.model_validate_json(record.value)
                except ValueError as exc:
                    log.error("dead-lettering unreadable erasure at offset %d", record.offset)
                    dead = DeadLetter.of(group, record, f"undecodable: {exc}")
                    publisher.publish([OutgoingMessage(dlq(ERASURES), dead.key, dead.to_json())])
                    continue
                with service.sessions.begin() as session:
                    erase(session, message)
            if subscription.commit(records):
                for record in records:
                    committed[(record.topic, record.partition)] = record.offset + 1
    finally:
        subscription.close()


def log_lost(bootstrap: str, group: str, committed: dict[tuple[str, int], int]) -> bool:
    """True when the broker no longer has offsets this member committed: an embedded broker that
    restarted without its log (False while it does not answer)."""
    if not any(committed.values()):
        return False
    try:
        offsets = committed_offsets(bootstrap, group, timeout_s=LOSS_CHECK_S)
    except BrokerUnavailable:
        return False
    return any(offset > 0 and tp not in offsets for tp, offset in committed.items())


class ErasureReport(BaseModel):
    """What `DELETE /v1/customers/{id}` erased in one service."""

    ids: list[str] = Field(description="every id erased here and suppressed from now on")
    deleted_rows: dict[str, int] = Field(description="rows deleted per table")
    published: bool = Field(description="the erasure is on its way to every service and ingest")
