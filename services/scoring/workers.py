"""Scoring's background workers, the same with or without its HTTP API: the scheduled refit,
the erasure worker and the outbox relay."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from services.scoring import repository
from services.scoring.erasure import erase_from_topic
from services.scoring.model import refit
from services.scoring.tables import scoring_outbox
from shared import metrics
from shared.outbox import relay
from shared.privacy import erasure_worker
from shared.runtime import ConsumerService, Worker

log = logging.getLogger(__name__)


def scheduled_refit(service: ConsumerService, stop: threading.Event) -> None:
    """Refit every `refit_interval_s` seconds (0 turns the schedule off)."""
    interval = service.settings.refit_interval_s
    while interval > 0 and not stop.wait(interval):
        try:
            with service.sessions.begin() as session:
                repository.save_model(session, refit(session, datetime.now(UTC).date()))
        except Exception:
            log.exception("scheduled refit failed; will try again next interval")


WORKERS: list[Worker] = [
    scheduled_refit,
    erasure_worker(erase_from_topic),
    relay(scoring_outbox, metrics.OUTBOX_PENDING.labels("scoring")),
]
