"""Composition root of a consuming service: engine, sessions and the consumer loop's thread."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.consumer_loop import ConsumerLoop, Handler, Progress
from shared.db import Checkpointer, make_engine, make_session_factory
from shared.events import TOUCHPOINTS
from shared.health import Check, HealthMonitor
from shared.kafka import Publisher, Subscription
from shared.settings import Settings

log = logging.getLogger(__name__)

GC_ALLOCATIONS = 20_000
"""Container allocations between two young-generation collections (CPython's default: 700). THE
loop makes tens of short-lived objects per event (rows, marks, parameter dicts), so at the default
the collector ran every few events and took a fifth of a consumer's time; it found little."""


def tune_gc() -> None:
    """Collect garbage less often in a process that runs THE loop or ingest (see GC_ALLOCATIONS)."""
    gc.set_threshold(GC_ALLOCATIONS)


Worker = Callable[["ConsumerService", threading.Event], None]
"""A background job of a service (scheduled refit, outbox relay), run until the event is set."""


class ConsumerService:
    """Builds what a consumer needs and runs THE loop and the service's workers in background
    threads.

    `stop()` lets the current batch finish (DB commit, then offset commit) before returning.
    """

    def __init__(
        self, settings: Settings, *, name: str, handler: Handler, workers: Sequence[Worker] = ()
    ) -> None:
        self.settings = settings
        self.name = name
        self.engine: Engine = make_engine(settings.database_url, background_checkpoints=True)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self._handler = handler
        self._workers = list(workers)
        if self.engine.dialect.name == "sqlite":
            self._workers.append(lambda _, stop: Checkpointer(self.engine).run(stop))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self.loop: ConsumerLoop | None = None
        self.progress = Progress()  # of every loop this service runs, for readiness
        self.health = HealthMonitor(
            group=name,
            bootstrap=settings.kafka_bootstrap,
            engine=self.engine,
            progress=lambda: self.progress if self._thread is not None else None,
            consumer=lambda: self._consumer_check() if self._thread is not None else True,
        )
        self._workers.append(lambda _, stop: self.health.run(stop))

    def start(self, consume: bool = True) -> None:
        """Start the workers, and the consumer loop unless `consume` is false (API only)."""
        if consume:
            tune_gc()
            self._thread = threading.Thread(
                target=self._run, name=f"{self.name}-consumer", daemon=True
            )
            self._threads.append(self._thread)
        self._threads += [
            threading.Thread(
                target=w, args=(self, self._stop), name=f"{self.name}-job", daemon=True
            )
            for w in self._workers
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self.engine.dispose()

    def request_stop(self) -> None:
        """Ask the loop to stop after the current batch (safe from a signal handler)."""
        self._stop.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def readiness(self) -> dict[str, Check]:
        """Broker and database reachable (checked once a second) and, for a consumer, progress."""
        checks = self.health.checks()
        if self._thread is not None and "consumer" in checks:
            checks["consumer"] = self._consumer_check()
        return checks

    def _consumer_check(self) -> Check:
        loop = self.loop
        if loop is None:
            return "the consumer has not started"
        if not loop.stats.healthy:
            return f"the consumer cannot apply its batch: {loop.stats.last_error}"
        stalled = self.progress.stalled_s(time.monotonic())
        if stalled > self.settings.consumer_stall_s:
            return (
                f"the consumer is stuck: {self.progress.behind()} events behind and no offsets "
                f"committed for {stalled:.0f} s"
            )
        return True

    def _run(self) -> None:
        publisher = Publisher.of(self.settings, f"{self.name}-dlq")
        try:
            while not self._stop.is_set():
                try:
                    self._consume(publisher)
                except Exception:
                    # Unexpected client failure: report not-ready, start a fresh group member.
                    log.exception("consumer %s failed; restarting it", self.name)
                    if self.loop is not None:
                        self.loop.stats.healthy = False
                    self._stop.wait(1.0)
        finally:
            publisher.close()

    def _consume(self, publisher: Publisher) -> None:
        subscription = Subscription(
            self.settings.kafka_bootstrap,
            group_id=self.name,
            topics=[TOUCHPOINTS],
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
        )
        try:
            self.loop = ConsumerLoop(
                name=self.name,
                subscription=subscription,
                session_factory=self.sessions,
                handler=self._handler,
                dead_letters=publisher,
                stop=self._stop,
                batch_size=self.settings.consumer_batch_size,
                progress=self.progress,
            )
            self.loop.run()
        finally:
            subscription.close()


def run_until_signalled(service: ConsumerService) -> int:
    """Run a consumer in the foreground until SIGTERM/SIGINT, then finish the batch and exit."""

    def on_signal(signum: int, frame: object) -> None:
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    service.join()
    service.stop()
    return 0
