"""`/metrics` of every service, scraped before and after real traffic: the counters move by
exactly what was sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.ingest.api import create_app as ingest_app
from services.lifecycle.api import create_app as lifecycle_app
from services.scoring.api import create_app as scoring_app
from tests.support.pipeline import make_touchpoints, publish, settings_for, wait_for
from touchline.broker import EmbeddedBroker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def ingest(broker: EmbeddedBroker) -> Iterator[TestClient]:
    settings = settings_for(broker.bootstrap, "sqlite://", write_keys="test-key:web-site")
    with TestClient(ingest_app(settings)) as client:
        yield client


def test_ingest_counts_accepted_by_channel_and_rejected_by_reason(ingest: TestClient) -> None:
    user = f"u-{uuid.uuid4().hex}"
    email = {"campaign": {"medium": "email"}}
    batch = [
        {"type": "page", "userId": user},
        {"type": "page", "userId": user},
        {"type": "track", "userId": user, "event": "Email Link Clicked", "context": email},
        {"type": "track", "event": "No Id"},
        {"type": "track", "userId": "'; DROP TABLE", "event": "x", "timestamp": "not a time"},
    ]
    before = scrape(ingest)
    answer = ingest.post("/v1/batch", json={"batch": batch}, auth=("test-key", ""))
    assert answer.status_code == 200 and answer.json()["accepted"] == 3
    assert ingest.post("/v1/batch", json={"batch": []}).status_code == 401
    after = scrape(ingest)

    assert moved(before, after, "touchline_ingest_events_accepted_total", channel="web") == 2
    assert moved(before, after, "touchline_ingest_events_accepted_total", channel="email") == 1
    reasons = {
        dict(labels)["reason"]: after[(name, labels)] - before.get((name, labels), 0)
        for name, labels in after
        if name == "touchline_ingest_events_rejected_total"
    }
    assert reasons["userId or anonymousId is required"] == 1
    assert sum(reasons.values()) == 2
    assert moved(before, after, "touchline_ingest_produce_seconds_count") == 1
    assert (
        moved(before, after, "touchline_http_requests_total", service="ingest", status="200") == 1
    )
    assert (
        moved(before, after, "touchline_http_requests_total", service="ingest", status="401") == 1
    )


def test_lifecycle_counts_events_batches_transitions_and_lag(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    events = make_touchpoints(customers=5, per_customer=3)  # first touches on each channel
    settings = settings_for(own_broker.bootstrap, sqlite_url)
    with TestClient(lifecycle_app(settings)) as client:
        before = scrape(client)
        publish(own_broker.bootstrap, events)

        def applied() -> Samples:
            return scrape(client)

        # The lag gauge is set after the offset commit, which follows the counters: wait for both.
        after = wait_for(
            applied,
            lambda s: (
                moved(before, s, "touchline_consumer_events_total", **LIFECYCLE_APPLIED)
                >= len(events)
                and set(lifecycle_lag(s).values()) == {0.0}
            ),
            60,
            "the lifecycle consumer to apply and commit every event",
        )
    assert moved(before, after, "touchline_consumer_events_total", **LIFECYCLE_APPLIED) == 15
    for channel in ("web", "email", "mobile", "social", "other"):
        labels = {"kind": "stage", "to_stage": "visitor", "channel": channel}
        assert moved(before, after, "touchline_lifecycle_transitions_total", **labels) == 1
    assert moved(before, after, "touchline_consumer_batch_size_sum", consumer="lifecycle") == 15
    assert moved(before, after, "touchline_consumer_batch_seconds_count", consumer="lifecycle") >= 1


def lifecycle_lag(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["partition"]: v
        for (name, labels), v in samples.items()
        if name == "touchline_consumer_lag" and dict(labels)["consumer"] == "lifecycle"
    }


LIFECYCLE_APPLIED = {"consumer": "lifecycle", "outcome": "applied"}


def test_scoring_counts_refits(broker: EmbeddedBroker, sqlite_url: str) -> None:
    settings = settings_for(broker.bootstrap, sqlite_url, run_consumer=False, refit_interval_s=0)
    with TestClient(scoring_app(settings)) as client:
        before = scrape(client)
        answer = client.post("/v1/model/refit", headers={"Authorization": "Bearer test-admin"})
        assert answer.status_code < 500, answer.text
        after = scrape(client)
    assert moved(before, after, "touchline_scoring_refits_total", outcome="failed") == 1  # no data
    assert moved(before, after, "touchline_scoring_refit_seconds_count") == 1
