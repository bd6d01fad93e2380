"""Ingest's suppression list: every id ever erased, read from `privacy.erasures.v1`."""

from __future__ import annotations

import logging
import threading
import time

from shared.events import ERASURES, Erasure
from shared.kafka import TopicReader
from shared.privacy import LOSS_CHECK_S, HasIds, event_ids, id_hash

log = logging.getLogger(__name__)


class SuppressionList:
    """Ingest's view of every id ever erased: read from `privacy.erasures.v1` in a background
    thread. `ready` once everything on the topic at start has been read."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._hashes: set[str] = set()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suppressions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def suppressed(self, event: HasIds) -> bool:
        if not self._hashes:  # nobody was ever erased: skip hashing the ids
            return False
        return any(id_hash(i) in self._hashes for i in event_ids(event))

    def add(self, value: bytes) -> None:
        try:
            message = Erasure.model_validate_json(value)
        except ValueError:
            log.error("unreadable message on %s skipped", ERASURES)  # consumers dead-letter it
            return
        self._hashes.update(id_hash(i) for i in message.ids)
        self._hashes.update(message.id_hashes)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reader = TopicReader(self._bootstrap, ERASURES, client_id="ingest-suppressions")
            except Exception as exc:
                log.warning("cannot read %s yet: %s", ERASURES, type(exc).__name__)
                self._stop.wait(1.0)
                continue
            try:
                checked_at = time.monotonic()
                while not self._stop.is_set():
                    for value in reader.poll(timeout_ms=200):
                        self.add(value)
                    if reader.caught_up():
                        self._ready.set()
                    if time.monotonic() - checked_at >= LOSS_CHECK_S:
                        checked_at = time.monotonic()
                        if reader.rewind_if_replaced():
                            log.error("the broker lost %s: reading it again", ERASURES)
            except Exception as exc:
                log.warning("reading %s failed, reconnecting: %s", ERASURES, type(exc).__name__)
                self._stop.wait(1.0)
            finally:
                reader.close()
