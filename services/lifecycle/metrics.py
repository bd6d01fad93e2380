"""Lifecycle's own metrics (declared in services/lifecycle/service.py)."""

from __future__ import annotations

from prometheus_client import Counter

TRANSITIONS = Counter(
    "touchline_lifecycle_transitions",
    "Committed lifecycle transitions, by kind, stage entered and triggering channel",
    ["kind", "to_stage", "channel"],
)

OWN = (TRANSITIONS,)
