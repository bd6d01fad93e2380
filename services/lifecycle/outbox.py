"""Lifecycle's outbox relay (shared.outbox): committed transitions go to
`lifecycle.stage-changes.v1` and, ahead of them, the erasures lifecycle passes on go to
`privacy.erasures.v1`. Consumers deduplicate stage changes by `transition_id`."""

from __future__ import annotations

from services.lifecycle.tables import lifecycle_outbox
from shared import metrics
from shared.outbox import relay as relay_worker

relay = relay_worker(lifecycle_outbox, metrics.OUTBOX_PENDING.labels("lifecycle"))
