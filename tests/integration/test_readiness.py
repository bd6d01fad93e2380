"""Readiness means progress: a consumer service turns not-ready within 5 s when its database is
locked, its broker is gone or its loop is stuck, says why, and turns ready again after recovery."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from services.ingest import draining
from services.ingest.api import create_app as ingest_app
from services.lifecycle.handlers import build_engine
from services.lifecycle.tables import lifecycle_customers
from shared.api import health_router
from shared.events import Touchpoint, all_topics
from shared.health import Check
from shared.kafka import ensure_topics
from shared.metrics import LOG_LOST
from shared.runtime import ConsumerService
from shared.settings import EMBEDDED_MIN_PARTITIONS
from tests.support.pipeline import (
    make_touchpoints,
    publish,
    running,
    settings_for,
    total_events,
    wait_for,
    wait_until_applied,
)
from touchline.broker import EmbeddedBroker

LIFECYCLE = build_engine(settings_for("unused:9092", "sqlite://")).apply
DETECT_S = 5.0  # the promise: not ready within this long
pytestmark = pytest.mark.wall_clock


STALL = {"consumer_stall_s": 2.0}  # a stuck handler is noticed quickly


def is_ready(checks: dict[str, Check]) -> bool:
    return all(result is True for result in checks.values())


def not_ready_within(service: ConsumerService, check: str, what: str) -> tuple[str, float]:
    """Waits until `check` fails; returns its reason and how long that took."""
    started = time.monotonic()
    checks = wait_for(service.readiness, lambda c: c.get(check, True) is not True, 30, what)
    reason = checks[check]
    assert isinstance(reason, str)
    return reason, time.monotonic() - started


def test_a_locked_database_is_not_ready_within_5s_and_recovers(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    with running(own_broker.bootstrap, sqlite_url, "lifecycle", LIFECYCLE, **STALL) as service:
        wait_for(service.readiness, is_ready, 60, "ready")
        lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            reason, took = not_ready_within(service, "database", "the lock to be noticed")
            assert took < DETECT_S
            assert "not writable" in reason and "locked" in reason
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        events = make_touchpoints(customers=5, per_customer=4)
        publish(own_broker.bootstrap, events)
        wait_for(service.readiness, is_ready, 30, "ready again")
        customers = sorted({e.customer_key for e in events})
        wait_until_applied(
            sqlite_url, lifecycle_customers, customers, len(events), 60, "the events after the lock"
        )


def test_broker_gone_is_not_ready_within_5s_then_the_lost_log_is_reported(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    events = make_touchpoints(customers=5, per_customer=4)
    customers = sorted({e.customer_key for e in events})
    lost_before = LOG_LOST.labels("lifecycle")._value.get()
    with running(own_broker.bootstrap, sqlite_url, "lifecycle", LIFECYCLE, **STALL) as service:
        publish(own_broker.bootstrap, events)
        wait_until_applied(
            sqlite_url, lifecycle_customers, customers, len(events), 60, "the first events"
        )
        wait_for(service.readiness, is_ready, 30, "ready")
        own_broker.stop()
        reason, took = not_ready_within(service, "broker", "the broker outage to be noticed")
        assert took < DETECT_S
        assert "did not answer" in reason

        own_broker.start()  # memory only: it comes back empty, committed offsets included
        ensure_topics(own_broker.bootstrap, all_topics(), partitions=EMBEDDED_MIN_PARTITIONS)
        later = make_touchpoints(customers=5, per_customer=2)
        publish(own_broker.bootstrap, later)  # at once: the consumer's old positions are past them
        notices = wait_for(lambda: service.health.notices, bool, 30, "the lost log noticed")
        assert "lost consumer group lifecycle's committed offsets" in notices[0]
        assert LOG_LOST.labels("lifecycle")._value.get() == lost_before + 1
        wait_until_applied(
            sqlite_url,
            lifecycle_customers,
            sorted({e.customer_key for e in later}),
            len(later),
            90,
            "events on the new log applied",
        )
        wait_for(service.readiness, is_ready, 30, "ready again")
        assert len(service.health.notices) == 1  # reported once, not every second


def test_a_stuck_consumer_with_lag_is_not_ready_and_recovers(
    own_broker: EmbeddedBroker, sqlite_url: str
) -> None:
    release = threading.Event()

    def stuck(session: Session, events: Sequence[Touchpoint]) -> None:
        release.wait(60)
        LIFECYCLE(session, events)

    events = make_touchpoints(customers=5, per_customer=4)
    customers = sorted({e.customer_key for e in events})
    with running(own_broker.bootstrap, sqlite_url, "lifecycle", stuck, **STALL) as service:
        wait_for(service.readiness, is_ready, 60, "ready")
        publish(own_broker.bootstrap, events)
        try:
            reason, took = not_ready_within(service, "consumer", "the stuck loop to be noticed")
            assert "stuck" in reason and "events behind" in reason
            assert took < DETECT_S  # since the events were published (stall bound here: 2 s)
        finally:
            release.set()
        wait_for(service.readiness, is_ready, 30, "ready again")
        assert total_events(sqlite_url, lifecycle_customers, customers) == len(events)


def test_readyz_answers_503_with_a_reason_per_failing_check() -> None:
    app = FastAPI()
    results: dict[str, Check] = {"broker": True, "database": "the database is locked"}
    app.include_router(health_router(lambda request: results, lambda request: ["a notice"]))
    with TestClient(app) as client:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "not ready",
            "checks": {"broker": True, "database": False},
            "reasons": {"database": "the database is locked"},
            "notices": ["a notice"],
        }
        results["database"] = True
        answer = client.get("/readyz")
        assert answer.status_code == 200
        assert answer.json()["reasons"] == {}


def test_draining_ingest_answers_503_with_retry_after_and_is_not_ready(
    broker: EmbeddedBroker,
) -> None:
    settings = settings_for(broker.bootstrap, "sqlite://")
    event = {"userId": f"drain-{uuid.uuid4().hex}", "event": "Signed Up"}
    with TestClient(ingest_app(settings)) as client:
        assert client.post("/v1/track", json=event, auth=("test-key", "")).status_code == 200
        assert client.get("/readyz").status_code == 200
        draining.drain()
        try:
            answer = client.post("/v1/track", json=event, auth=("test-key", ""))
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == draining.RETRY_AFTER_S
            assert answer.json()["code"] == "draining"
            readyz = client.get("/readyz")
            assert readyz.status_code == 503
            assert readyz.json()["reasons"] == {"accepting": draining.readiness()}
        finally:
            draining.resume()
        assert client.post("/v1/track", json=event, auth=("test-key", "")).status_code == 200
