"""Ingest's own metrics (declared in services/ingest/service.py)."""

from __future__ import annotations

import re

from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS

EVENTS_ACCEPTED = Counter(
    "touchline_ingest_events_accepted",
    "Events accepted by ingest (acknowledged by the broker), by channel",
    ["channel"],
)
EVENTS_REJECTED = Counter(
    "touchline_ingest_events_rejected",
    "Events rejected by ingest (recorded on touchpoints.rejected.v1), by reason",
    ["reason"],
)
PRODUCE_SECONDS = Histogram(
    "touchline_ingest_produce_seconds",
    "Time for the broker to acknowledge one request's events",
    buckets=LATENCY_BUCKETS,
)

OWN = (EVENTS_ACCEPTED, EVENTS_REJECTED, PRODUCE_SECONDS)


def reason_label(reason: str) -> str:
    """A bounded label for a rejection reason: quoted values (which may be anything a client
    sent) are dropped."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "<value>", reason)[:100]
