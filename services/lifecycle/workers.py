"""Lifecycle's background workers, the same with or without its HTTP API: the outbox relay
(shared.outbox: committed transitions go to `lifecycle.stage-changes.v1` and, ahead of them, the
erasures lifecycle passes on go to `privacy.erasures.v1`; consumers deduplicate stage changes by
`transition_id`) and the erasure worker."""

from __future__ import annotations

from services.lifecycle.erasure import erase_from_topic
from services.lifecycle.tables import lifecycle_outbox
from shared import metrics
from shared.outbox import relay as outbox_relay
from shared.privacy import erasure_worker
from shared.runtime import Worker

relay = outbox_relay(lifecycle_outbox, metrics.OUTBOX_PENDING.labels("lifecycle"))

WORKERS: list[Worker] = [relay, erasure_worker(erase_from_topic)]
