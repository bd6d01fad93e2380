"""THE consumer loop every Touchline consumer runs.

poll a batch -> one DB transaction: atomic processed-message insert per event, drop the events of
erased (suppressed) ids, apply the new ones -> DB commit -> then commit Kafka offsets. A crash
anywhere replays from the last committed offset and the processed table drops what was already
applied, so every event counts exactly once.
Poison messages (undecodable, or failing the handler repeatedly) go to `<topic>.dlq`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared import metrics, privacy
from shared.db import dedup_scope, forget_processed, mark_processed
from shared.events import DeadLetter, Touchpoint, dlq
from shared.kafka import BrokerUnavailable, OutgoingMessage, Publisher, Record, Subscription

log = logging.getLogger(__name__)

Handler = Callable[[Session, Sequence[Touchpoint]], None]
"""Applies new (never seen by this consumer) touchpoints inside the loop's transaction.

It must not commit: the loop owns the transaction."""


@dataclass
class LoopStats:
    """What the loop has done, for readiness and metrics."""

    batches: int = 0
    applied: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)  # applied events per channel
    duplicates: int = 0
    suppressed: int = 0  # events of erased customers, dropped
    dead_lettered: int = 0
    healthy: bool = True
    last_error: str | None = None
    last_batch_seconds: float = 0.0
    last_batch_size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Progress:
    """Where the loop stands, for readiness and metrics (read from other threads: every field is
    replaced whole, never mutated)."""

    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # per assigned partition
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # last offsets it committed
    last_commit_at: float | None = None  # time.monotonic()
    waiting_since: float | None = None  # behind, and no commit since then
    # Set when the broker lost its log: the loop reads the new log from its first offset.
    restart_from_beginning: bool = False
    oldest_pending: datetime | None = None  # received_at of the oldest event in hand

    def behind(self) -> int:
        return sum(self.lag.values())

    def unapplied_age_s(self) -> float:
        """Seconds since ingest received the oldest event not applied yet (0 when caught up)."""
        oldest = self.oldest_pending
        if oldest is None or not self.behind():
            return 0.0
        return max((datetime.now(UTC) - oldest).total_seconds(), 0.0)

    def stalled_s(self, now: float) -> float:
        """Seconds the loop has had events to apply without committing any."""
        return 0.0 if self.waiting_since is None else now - self.waiting_since


def _is_infrastructure_error(exc: BaseException) -> bool:
    """A database that is down or locked is retried; anything else is a bad message."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class ConsumerLoop:
    """Runs `handler` over a subscription until `stop` is set, finishing the current batch."""

    def __init__(
        self,
        *,
        name: str,
        subscription: Subscription,
        session_factory: sessionmaker[Session],
        handler: Handler,
        dead_letters: Publisher,
        stop: threading.Event,
        batch_size: int = 500,
        max_attempts: int = 3,
        max_backoff_s: float = 2.0,
        progress: Progress | None = None,
    ) -> None:
        self.name = name
        self.stats = LoopStats()
        self.progress = progress or Progress()  # kept by the service across restarts of the loop
        self._subscription = subscription
        self._sessions = session_factory
        self._handler = handler
        self._dead_letters = dead_letters
        self._stop = stop
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s

    def run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            if self.progress.restart_from_beginning:
                # A member that rejoins reads from the group's (lost) offsets, one that did not
                # from its old positions: past the start of the new log. Duplicates are dropped.
                self.progress.restart_from_beginning = False
                self._subscription.rewind_to_start()
            records = self._subscription.poll(max_records=self._batch_size, timeout_ms=200)
            if not records:
                self._idle()
                continue
            self._note_lag(self._subscription.progress(records, done=False))
            try:
                self.process(records)
            except (BrokerUnavailable, OperationalError, InterfaceError, DBAPIError) as exc:
                # Nothing was committed to Kafka: read the same records again after a pause.
                self._record_failure(exc)
                self._subscription.rewind(records)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = 0.1
            after = self._subscription.progress(records, done=True)
            if self._subscription.commit(records):
                self._note_commit(records, after)
            else:  # applied, but the offsets did not move: no progress for readiness
                self._note_lag(after)

    def _note_lag(self, ends: Sequence[tuple[str, int, int | None, int]]) -> None:
        metrics.observe_lag(self.name, ends)
        known = {(t, p): max(end - nxt, 0) for t, p, end, nxt in ends if end is not None}
        progress = self.progress
        progress.lag = {**progress.lag, **known}
        if progress.behind() == 0:
            progress.waiting_since = progress.oldest_pending = None
        elif progress.waiting_since is None:
            progress.waiting_since = time.monotonic()

    def _note_commit(
        self, records: Sequence[Record], ends: Sequence[tuple[str, int, int | None, int]]
    ) -> None:
        progress = self.progress
        done: dict[tuple[str, int], int] = {}
        for r in records:
            done[(r.topic, r.partition)] = max(done.get((r.topic, r.partition), 0), r.offset + 1)
        progress.committed = {**progress.committed, **done}
        progress.last_commit_at = time.monotonic()
        # Committed just now: the stall clock starts again; the next batch brings the oldest.
        progress.waiting_since = progress.oldest_pending = None
        self._note_lag(ends)

    def _idle(self) -> None:
        """Nothing polled: forget the lag of partitions this member no longer holds."""
        progress = self.progress
        held = self._subscription.assigned()
        if any(tp not in held for tp in progress.lag):
            progress.lag = {tp: n for tp, n in progress.lag.items() if tp in held}
            if progress.behind() == 0:
                progress.waiting_since = progress.oldest_pending = None

    def process(self, records: Sequence[Record]) -> None:
        """Apply one polled batch to the database and dead-letter its poison messages.

        Raises on infrastructure failure (database or broker down): then nothing may be committed.
        """
        started = time.perf_counter()
        dead: list[DeadLetter] = []
        events: list[tuple[Record, Touchpoint]] = []
        for record in records:
            try:
                events.append((record, Touchpoint.model_validate_json(record.value)))
            except (ValidationError, ValueError) as exc:
                dead.append(self._dead_letter(record, f"undecodable: {exc}"))
        if events:
            oldest = min(e.received_at for _, e in events)
            if self.progress.oldest_pending is None or oldest < self.progress.oldest_pending:
                self.progress.oldest_pending = oldest
        try:
            applied, duplicates, suppressed = self._apply(events)
        except Exception as exc:
            if _is_infrastructure_error(exc):
                raise
            log.warning("batch failed, isolating the poison message: %s", type(exc).__name__)
            applied, duplicates, suppressed, poison = self._apply_one_by_one(events)
            dead.extend(poison)
        if dead:
            self._dead_letters.publish(
                [OutgoingMessage(dlq(d.topic), d.key, d.to_json()) for d in dead]
            )
        elapsed = time.perf_counter() - started
        metrics.BATCH_SIZE.labels(self.name).observe(len(records))
        metrics.BATCH_SECONDS.labels(self.name).observe(elapsed)
        for outcome, count in (
            ("applied", len(applied)),
            ("duplicate", duplicates),
            ("suppressed", suppressed),
            ("dead_lettered", len(dead)),
        ):
            metrics.CONSUMED.labels(self.name, outcome).inc(count)
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.applied += len(applied)
            self.stats.duplicates += duplicates
            self.stats.suppressed += suppressed
            self.stats.by_channel.update(e.channel for e in applied)
            self.stats.dead_lettered += len(dead)
            self.stats.healthy = True
            self.stats.last_error = None
            self.stats.last_batch_size = len(records)
            self.stats.last_batch_seconds = elapsed

    def _apply(
        self, events: Sequence[tuple[Record, Touchpoint]]
    ) -> tuple[list[Touchpoint], int, int]:
        """One transaction for the whole batch; returns the applied events, how many were
        duplicates and how many belonged to erased (suppressed) customers."""
        if not events:
            return [], 0, 0
        with self._sessions.begin() as session:
            # The processed-message insert comes first: it is the transaction's first write.
            # A message id is unique per sender (source and customer), not globally.
            rows = [
                (e.message_id, dedup_scope(e.source, customer_hash), customer_hash)
                for _, e in events
                for customer_hash in (privacy.id_hash(e.customer_key),)
            ]
            new_keys = mark_processed(session, self.name, rows)
            fresh: list[Touchpoint] = []
            fresh_keys: dict[int, tuple[str, str]] = {}
            for (message_id, scope, _), (_, event) in zip(rows, events, strict=True):
                key = (message_id, scope)
                if key in new_keys:
                    new_keys.discard(key)  # a duplicate inside the batch counts once
                    fresh.append(event)
                    fresh_keys[id(event)] = key
            allowed = privacy.unsuppressed(session, self.name, fresh)
            if len(allowed) < len(fresh):
                kept = {id(e) for e in allowed}
                forget_processed(
                    session, self.name, [k for i, k in fresh_keys.items() if i not in kept]
                )
            self._handler(session, allowed)
        return allowed, len(events) - len(fresh), len(fresh) - len(allowed)

    def _apply_one_by_one(
        self, events: Sequence[tuple[Record, Touchpoint]]
    ) -> tuple[list[Touchpoint], int, int, list[DeadLetter]]:
        applied: list[Touchpoint] = []
        duplicates = suppressed = 0
        poison: list[DeadLetter] = []
        for record, event in events:
            for attempt in range(1, self._max_attempts + 1):
                try:
                    a, d, s = self._apply([(record, event)])
                except Exception as exc:
                    if _is_infrastructure_error(exc):
                        raise
                    if attempt == self._max_attempts:
                        poison.append(self._dead_letter(record, f"{type(exc).__name__}: {exc}"))
                    continue
                applied, duplicates, suppressed = applied + a, duplicates + d, suppressed + s
                break
        return applied, duplicates, suppressed, poison

    def _dead_letter(self, record: Record, error: str) -> DeadLetter:
        # The error text can quote payload values (PII), so it goes to the DLQ, not to the log.
        log.error("dead-lettering %s[%d]@%d", record.topic, record.partition, record.offset)
        return DeadLetter.of(self.name, record, error)

    def _record_failure(self, exc: BaseException) -> None:
        log.warning(
            "consumer %s cannot make progress, will retry: %s", self.name, type(exc).__name__
        )
        with self.stats.lock:
            self.stats.healthy = False
            self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
