"""What a consuming service's `/readyz` reports: its broker and database checked once a second from
a thread of their own (so every check is bounded and the answer instant), and the broker losing the
group's log (an embedded broker that restarted) noticed and reported loudly."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from shared import metrics
from shared.consumer_loop import Progress
from shared.db import database_reachable
from shared.kafka import BrokerUnavailable, committed_offsets

log = logging.getLogger(__name__)

Check = bool | str
"""A readiness check's result: True when it passes, else a sentence saying why it does not."""

PROBE_TIMEOUT_S = 0.5  # each probe of the broker
WRITE_LOCK_TIMEOUT_S = 2.0  # a SQLite writer holds the lock for a batch: wait that long for it
NOTICES_KEPT = 5


class DatabaseProbe:
    """Can this service write? SQLite: take the write lock and let it go (a reader would not
    notice a database another process holds locked); PostgreSQL: a bounded `SELECT 1`."""

    def __init__(self, engine: Engine, timeout_s: float = WRITE_LOCK_TIMEOUT_S) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self._path = engine.url.database if engine.dialect.name == "sqlite" else None
        self._conn: sqlite3.Connection | None = None

    def check(self) -> Check:
        if self._path is None or self._path == ":memory:":
            return database_reachable(self._engine) or "the database does not answer"
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self._path,
                    timeout=self._timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
            return True
        except sqlite3.Error as exc:
            self.close()
            return f"the database is not writable within {self._timeout_s:g} s: {exc}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class HealthMonitor:
    """Checks the broker (through the group's committed offsets), the database and the consumer's
    progress every `interval_s`; `checks()` answers from the last round, or fails if it hangs."""

    def __init__(
        self,
        *,
        group: str,
        bootstrap: str,
        engine: Engine,
        progress: Callable[[], Progress | None],
        consumer: Callable[[], Check] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self._group = group
        self._bootstrap = bootstrap
        self._database = DatabaseProbe(engine)
        self._progress = progress
        self._consumer = consumer
        self._interval_s = interval_s
        self._checks: dict[str, Check] = {
            "broker": "not checked yet",
            "database": "not checked yet",
        }
        self._checked_at = time.monotonic()
        self._reported: dict[tuple[str, int], int] = {}  # own offsets already reported lost
        self.notices: list[str] = []

    def checks(self) -> dict[str, Check]:
        age = time.monotonic() - self._checked_at
        if age > 3 * self._interval_s + WRITE_LOCK_TIMEOUT_S + PROBE_TIMEOUT_S:
            return {"health": f"the broker and database checks have hung for {age:.0f} s"}
        return dict(self._checks)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.check_once()
                stop.wait(self._interval_s)
        finally:
            self._database.close()

    def check_once(self) -> None:
        checks: dict[str, Check] = {
            "broker": self._check_broker(),
            "database": self._database.check(),
        }
        if self._consumer is not None:
            checks["consumer"] = self._consumer()
        progress = self._progress()
        if progress is not None:
            metrics.OLDEST_UNAPPLIED.labels(self._group).set(progress.unapplied_age_s())
        for name, result in checks.items():
            metrics.READY.labels(self._group, name).set(result is True)
        self._checks = checks
        self._checked_at = time.monotonic()

    def _check_broker(self) -> Check:
        try:
            offsets = committed_offsets(self._bootstrap, self._group, timeout_s=PROBE_TIMEOUT_S)
        except BrokerUnavailable:
            return f"the broker did not answer within {PROBE_TIMEOUT_S:g} s"
        # Offsets this member committed that the broker no longer has: it lost the group's log.
        progress = self._progress()
        mine = progress.committed if progress is not None else {}
        gone = {
            tp
            for tp, offset in mine.items()
            if offset > 0 and tp not in offsets and self._reported.get(tp) != offset
        }
        if gone and progress is not None:
            self._report_lost(gone)
            # The whole log went: what this member had committed is accounted for, once.
            self._reported = dict(mine)
            progress.restart_from_beginning = True
        return True

    def _report_lost(self, partitions: set[tuple[str, int]]) -> None:
        names = ", ".join(f"{t}[{p}]" for t, p in sorted(partitions))
        notice = (
            f"{datetime.now(UTC).isoformat(timespec='seconds')}: the broker lost consumer group "
            f"{self._group}'s committed offsets ({names}): it restarted without its log, so "
            "events accepted before then and not yet applied are lost; consuming the new log "
            "from its start"
        )
        log.error("BROKER LOG LOST: %s", notice)
        metrics.LOG_LOST.labels(self._group).inc()
        self.notices = [*self.notices, notice][-NOTICES_KEPT:]
