"""Touchline's Kafka topics: their names and the configuration each is created with."""

from __future__ import annotations

TOUCHPOINTS = "touchpoints.v1"
REJECTED = "touchpoints.rejected.v1"
STAGE_CHANGES = "lifecycle.stage-changes.v1"
ERASURES = "privacy.erasures.v1"  # GDPR erasures: every service erases, ingest suppresses
# The erasures are the suppression list: compacted (every key is unique), never expired.
TOPIC_CONFIGS = {ERASURES: {"cleanup.policy": "compact"}}


def topic_configs(topic: str, *, min_insync_replicas: int | None = None) -> dict[str, str]:
    """The configuration a new topic is created with (unset: the broker's defaults)."""
    configs = dict(TOPIC_CONFIGS.get(topic, {}))
    if min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(min_insync_replicas)
    return configs


def dlq(topic: str) -> str:
    """The dead-letter topic for poison messages read from `topic`."""
    return f"{topic}.dlq"


def all_topics() -> list[str]:
    """Every topic the embedded stack creates, dead-letter topics included."""
    main = [TOUCHPOINTS, REJECTED, STAGE_CHANGES, ERASURES]
    return main + [dlq(t) for t in main]
